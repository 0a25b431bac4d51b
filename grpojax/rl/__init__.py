"""The RL loop's pieces: rollouts with dynamic sampling, trainer rows, step functions, eval."""
