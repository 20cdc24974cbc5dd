"""PyTorch dual-encoder trainer (ALIGN / UniCL). Reads shards; never imports Beam."""
