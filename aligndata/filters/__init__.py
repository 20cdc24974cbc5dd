"""The paper's rules as plain Python: no Beam, no torch. Each module holds one family of rules."""
