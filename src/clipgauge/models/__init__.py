"""CLIP checkpoints: loading, fingerprints, and building small ones from scratch."""
