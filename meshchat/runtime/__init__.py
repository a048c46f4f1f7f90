"""The running node (layer L3), in parts. ``meshchat.node.Node`` builds them in ``start`` and
is a facade over them; nothing here is public API.

The pure cores decide (``authority``, ``admission``, ``hostwatch``, ``historysync``,
``keyring``, ``peertable``, ``session``, ``moderation``, ``room``); these parts run what they
return. Each part is given, at construction, only the collaborators it uses; notices that go
up (a peer is gone, a state says "rejoin") are callbacks passed in the same way.

======================  =====================================================================
``wire``                the edge: envelopes and sequence numbers, publish / send / sealed room
                        publish, pings and pending requests (and the one peer each went to),
                        strict decoding; ``Gatekeeper``: the one gate call
``inbound``             every frame from the transport: opened, admitted, routed by type
``peers``               the peer table (``PeerBook``): cards, liveness, probes, known-peers
                        file, bans to the transport, names and ``PeerInfo``
``directory``           rooms listed on the network (mDNS, heartbeats), ``/join``'s choice,
                        our own room announcements
``rooms``               ``JoinedRoom``, one per joined room (its cores and what the node
                        remembers of it), and ``Rooms``, the registry with last states
``session``             ``Sessions``: states applied, the host's side, keys, election and
                        admission glue
``chat``                saying, the message log, history sync and the join backlog
``joining``             host, join (password, moved rooms), leave, rejoin, merge
``hostops``             host-only operations (kick, ban, lock, handoff, ...)
``files``               file transfer: offers, the pull and the serve (``transfer``'s cores),
                        frames in and out; ``filedisk``: the disk thread, part files, the
                        whole-file check and the move into place; ``filejobs``: the bounded
                        table of transfers
``ticker``              the heartbeat timer
``local``               this node as a peer: identity, name, colour, away text, addresses, ports
``away``                ``/away``: the away text and the automatic private reply (once per
                        sender per interval, never to an automatic reply)
``emitter``, ``tasks``  ``Node.events()`` streams; background tasks and the closing flag
======================  =====================================================================

Every part that counts shares the node's one ``stats`` Counter.
"""
