"""Image-label data (an ImageFolder tree or a CSV of path,label) into WebDataset shards with ``.cls`` (UniCL)."""
