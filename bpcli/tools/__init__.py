"""What serves the core: gradient checks, sanity checks, inference, explain, inspect, timing."""
