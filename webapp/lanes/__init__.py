"""Lanes: one private FIFO queue per user, served by at most one worker cluster-wide."""
