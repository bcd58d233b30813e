"""The one model: OCI runtime-spec configs, and the states a container goes through.

  spec      RunOptions and CLI flags -> config.json (defaults, conversion), and validate():
            every check of a config in one place, each failure one line naming the field
  schema    config.json's field types (as runc's Go structs), checked before anything else
  status    Status, the lifecycle states, with the transitions each allows
  hostname  RFC 1123 hostnames (on the run path, so not in zoned.network)
  features  `zoned features`: what this runtime supports (runtime-spec features.md)

This file imports nothing: `zoned run` pays only for the modules it uses.
"""
