"""Objectives: advantages, surrogates, corrections, regularisers and aggregation as pure functions."""
