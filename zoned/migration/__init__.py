"""Moving a running zone to another host: `zoned migrate` here, `zoned relocation-server`
there, over ssh or TLS. The package, one module per concern (import the one you need:
nothing here is imported on `zoned run`'s path, and this file imports none of them):
  transport    the framed channel and its two transports (ssh's pipes, TLS 1.3), keys
  pages        the relay of CRIU's lazy-page stream, held back until the commit
  source       Migration: the sending side, from the checks to the commit or put-back
  destination  Session: the receiving side, which restores the zone stopped and lets it
               run only once the source commits
  server       the relocation server (--listen with its allow-list, or --stdio for ssh)
The checkpoint itself is zoned.checkpoint's; the network's part, zoned.network's
checkpoint_hooks.
"""
