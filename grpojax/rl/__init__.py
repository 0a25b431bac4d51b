"""The RL loop's pieces: the one update, rollouts, prompt sources, replay, group edits, eval."""
