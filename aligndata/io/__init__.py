"""Small I/O helpers every layer may use: the storage backends, input matching and atomic writes. No Beam at import."""
