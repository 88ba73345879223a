"""Optional C kernels for CPU training and their builder."""
