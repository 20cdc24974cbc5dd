"""The command families of the `aligndata` CLI. Each module registers its sub-commands; handlers import heavy
modules (Beam, torch) lazily. The top layer: it may import every package below it."""
