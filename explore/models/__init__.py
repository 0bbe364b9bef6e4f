"""Model families: the registry, the course's architectures, pretrained backbones and their weights."""
