"""Training the ranker: settings, configs, positive sources, negative samplers, masking, loss and the loop."""
