"""Tunables: injected frozen config with units in the names."""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_VERSION = 1
NODE_SERVICE_TYPE = "_meshchat._tcp.local."
ROOM_SERVICE_TYPE = "_meshchat-room._tcp.local."


@dataclass(frozen=True, slots=True)
class Timings:
    """Every timer of a node. Defaults suit a real LAN; tests pass smaller values.

    Idle traffic (``meshchat.beats``): presence goes out on change and every
    ``presence_refresh_s``; a member's heads on change and every ``heads_refresh_s``; a
    room's host sends the room beat every ``heartbeat_interval_s`` to its members only.

    Liveness of a peer goes alive → evasive (nothing heard for ``peer_evasive_s``, or its
    connection dropped; pinged) → gone (nothing for ``peer_expired_s``, or no answer within
    ``peer_suspect_s`` of a dropped connection). Connections are watched by ZMTP heartbeats in
    libzmq (``ZmqTuning``), so a silent peer costs no Python work. A room's host is replaced after
    ``host_timeout_s`` of silence plus an unanswered ping of ``host_ping_timeout_s``: a laptop
    that stalls for a second answers that ping and is not replaced.
    """

    heartbeat_interval_s: float = 0.25
    presence_refresh_s: float = 10.0
    heads_refresh_s: float = 10.0
    # Refreshes stretch with the crowd: a receiver gets at most this many a second from all
    # its peers together (``meshchat.beats``), and silence-based liveness stretches to match.
    refresh_budget_per_s: float = 2.0
    peer_evasive_s: float = 25.0
    peer_expired_s: float = 35.0
    peer_suspect_s: float = 1.0
    host_timeout_s: float = 0.9
    host_ping_timeout_s: float = 0.35
    request_timeout_s: float = 3.0
    join_timeout_s: float = 5.0
    # A join request not answered in this long goes again (same id; the host repeats its
    # answer): a connection that dies as a partition heals loses what was written into it.
    request_resend_s: float = 1.0
    discovery_wait_s: float = 2.0
    gap_fill_interval_s: float = 0.5
    # A batch waits at most this long for the lines it follows to be shown (meshchat.causal).
    causal_hold_s: float = 1.0
    rename_interval_s: float = 7 * 24 * 3600.0
    linger_s: float = 0.3
    # A peer whose ZAP refused our key is alive, not vanished: it stays listed (with its
    # rooms) this long after the refusal, so an unban lets us straight back in.
    refused_peer_kept_s: float = 60.0
    # A member takes a rival claim of the current host's own term (an earlier member that
    # claimed at the same moment) only this long after the current host took the room.
    claim_contest_s: float = 1.25
    # Files (issue 7): an offer stays open this long while its source is unchanged; chunks
    # asked for and not come are asked again after ``file_retry_s``; nothing for
    # ``file_stall_s`` is an interrupted transfer (it keeps asking, and resumes by itself).
    file_offer_ttl_s: float = 24 * 3600.0
    file_retry_s: float = 2.0
    file_stall_s: float = 5.0
    file_tick_s: float = 0.25
    # /away (issue 11): a private message to an away node gets the away text back at most
    # once per sender in this long.
    away_reply_interval_s: float = 60.0
    # A sender that restarted offers its unfinished transfers again, once the receiver is
    # heard, until the receiver answers: after file_reoffer_s, doubling to file_reoffer_max_s.
    file_reoffer_s: float = 2.0
    file_reoffer_max_s: float = 60.0

    @classmethod
    def fast(cls) -> Timings:
        """Short timers for tests on one machine."""
        return cls(
            heartbeat_interval_s=0.05,
            # Tests' silence limit (1 s) is shorter than ZMTP's 3 s, so a short cut can lose
            # peers whose connections never dropped (no redial Hello): presence brings them
            # back, so it goes every beat, as before issue 9. The real LAN's timers never
            # open that window (silence means 35 s there).
            presence_refresh_s=0.05,
            heads_refresh_s=0.5,
            refresh_budget_per_s=80.0,  # as on a real LAN: stretching starts past 20 peers
            peer_evasive_s=0.4,
            peer_expired_s=1.0,
            peer_suspect_s=0.5,
            host_timeout_s=0.3,
            host_ping_timeout_s=0.15,
            request_timeout_s=2.0,
            join_timeout_s=3.0,
            request_resend_s=0.4,
            discovery_wait_s=1.0,
            gap_fill_interval_s=0.1,
            claim_contest_s=0.45,
        )


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a node accepts from the network and the user."""

    max_frame_bytes: int = 256 * 1024
    max_text_chars: int = 4000
    max_name_chars: int = 32
    max_room_name_chars: int = 48
    max_collection_items: int = 1000
    max_nesting: int = 8
    history_on_join: int = 200
    history_batch: int = 500
    join_attempts_per_minute: int = 5
    max_peers: int = 1024
    pub_hwm: int = 10000
    # Per-peer token buckets (rate per second, burst): what one peer may make us do.
    presence_per_s: float = 50.0
    presence_burst: int = 100
    broadcasts_per_s: float = 2.0
    broadcasts_burst: int = 10
    introductions_per_s: float = 2.0
    introductions_burst: int = 20
    pings_per_s: float = 1000.0  # answering costs one small frame; /ping rounds run back to back
    pings_burst: int = 6000
    private_per_s: float = 20.0
    private_burst: int = 60
    joins_per_s: float = 1.0
    joins_burst: int = 10
    history_requests_per_s: float = 20.0
    history_requests_burst: int = 30
    state_requests_per_s: float = 5.0
    state_requests_burst: int = 20
    # Chat lines a member takes live from one author (any role), each batch counted as its
    # lines plus ``chat_batch_cost`` (a frame of one line costs a receiver nearly as much
    # work as one of 256); the rest are dropped and counted (``dropped_line_rate``), and
    # fetched later, at the history budget's pace. Our own ``say()`` paces itself at half
    # of both, so an honest sender is never over them on the receiving side, whatever the
    # jitter.
    chat_lines_per_s: float = 200.0
    chat_lines_burst: int = 8000
    chat_batch_cost: int = 8  # a batch costs this many lines more than it holds (per frame work)
    room_frames_per_s: float = 2000.0
    room_frames_burst: int = 4000
    direct_frames_per_s: float = 500.0
    direct_frames_burst: int = 2000
    max_rate_entries: int = 4096
    # Frames per peer the transport hands up at all (before decoding); beyond it, dropped.
    peer_frames_per_s: float = 5000.0
    peer_frames_burst: int = 20000
    # Admission (meshchat/admission.py): what joiners may make a host do, and the other way.
    joins_per_address_per_s: float = 5.0  # every JoinRequest from one address, any key
    joins_per_address_burst: int = 30
    max_join_challenges: int = 256  # pending password challenges; the oldest goes first
    # Join answers kept to repeat to a re-sent request (``ReplyCache``): an accept carries up
    # to half a frame of history, so 1,024 keys joining at once would pin 128 MiB. A repeat
    # whose answer was evicted is decided afresh, as before the cache.
    max_join_replies: int = 64
    join_challenge_ttl_s: float = 30.0
    max_admission_entries: int = 4096  # per-address buckets, per-(room, peer) attempt windows
    # The Argon2id cost a joiner accepts from a host: pwhash.argon2id OPSLIMIT/MEMLIMIT_MODERATE
    # (config imports no third-party code; tests/unit/test_admission.py checks the values).
    max_pwhash_opslimit: int = 3
    max_pwhash_memlimit: int = 256 * 1024 * 1024
    # A new state moves the room's term by at most this much, and its version by at most
    # max_version_step: no claim, handoff or merge can push either near the codec's 2^64 - 1.
    max_term_step: int = 16
    max_version_step: int = 1 << 20
    # Former hosts (and members lost as vanished) remembered per room: the room's lineage.
    max_former_hosts: int = 256
    # Peers remembered as ever having been members of a joined room (FORMER: may ask for the
    # state); past it, the longest-gone are forgotten (a host churning fake members cannot
    # grow it). Rooms listed on the network: per announcing peer, and in all.
    max_ever_members: int = 4096
    max_rooms_per_peer: int = 16
    max_listings: int = 1024
    # mDNS (meshchat.discovery.mdns): service names we track, of each type, and the records
    # we are asking for at once. Anyone on the LAN can announce any number of names.
    max_mdns_names: int = 2048
    max_mdns_resolving: int = 32
    # History sync and the keyring: what one member can make us track, fetch, hold or send.
    max_seq_ahead: int = 1 << 20  # numbers past the highest an author has shown: dropped
    max_held_runs: int = 1024  # disjoint runs held per author above its head
    max_gap_fetch: int = 1000  # numbers per author in one history request
    max_ranges_per_request: int = 64  # ranges in one history request we send or serve
    max_history_asked: int = 4096  # (peer, author, range) requests remembered
    history_reply_bytes: int = 128 * 1024  # one reply frame per request: its batch bytes
    history_reply_batches: int = 500  # ... and its batches
    max_void_ranges: int = 64  # void ranges taken from one reply
    # Causal order on screen (meshchat.causal): batches that wait, per room, for lines they
    # follow, and the names of one batch that are looked at (and that we send).
    max_causal_held: int = 64
    max_causal_deps: int = 16
    max_room_keys: int = 64  # the key ring, by epoch
    # X25519 boxes (one key agreement each) the first in line to claim a room makes per beat
    # ahead of a claim (``room.KeyBoxes``); all are kept for at most max_peers peers.
    boxes_per_beat: int = 8
    max_pending_sealed: int = 256  # sealed frames waiting for their key, per room
    max_pending_sealed_bytes: int = 4 * 1024 * 1024  # ... and their bytes
    pending_sealed_s: float = 10.0  # how long one may wait
    # Introductions (meshchat.peertable): a card someone else hands us is a candidate, not a
    # peer, until the peer itself answers. What one introducer can make us do is bounded.
    max_candidates: int = 512
    max_candidates_per_introducer: int = 32
    # Each source keeps a share of the table free of the other: fake mDNS records (anyone on
    # the LAN can send them) never crowd out the cards admitted peers introduce, nor the reverse.
    max_discovered_candidates: int = 384  # cards from our own discovery (mDNS, --peer)
    max_introduced_candidates: int = 384  # cards from all introducers together
    max_probes: int = 16  # candidates with a connection open (on the dialer) at once
    max_probes_per_introducer: int = 4
    max_discovered_probes: int = 12
    max_introduced_probes: int = 12
    introduced_cards_per_s: float = 8.0  # new cards taken from one introducer
    introduced_cards_burst: int = 64
    probe_timeout_s: float = 2.0  # a candidate that has not answered by then is dropped
    # The known-peers file (trust on first use): pins of peers we talked to are never evicted.
    max_known_peers: int = 4096  # entries not pinned; the least recently seen go first
    max_pinned_peers: int = 4096  # beyond this, new pins are refused (old ones stay)
    peers_file_write_interval_s: float = 2.0  # changes are batched, written off the loop
    # Files (issue 7). A chunk fits a frame with room to spare; the credit window keeps at
    # most file_credit_chunks * file_chunk_bytes in flight, so a control frame queued behind
    # file data waits for at most that much (1 MiB: about 8 ms at 130 MiB/s; with 2 MiB a
    # /ping during a transfer had a p99 of 23-26 ms, with 1 MiB 14-16 ms, at the same rate).
    file_chunk_bytes: int = 128 * 1024
    file_credit_chunks: int = 8
    file_frames_per_s: float = 20000.0
    file_frames_burst: int = 40000
    file_offers_per_s: float = 1.0  # offers one peer may make us show
    file_offers_burst: int = 10
    max_file_offers: int = 64  # incoming offers not answered yet; the oldest goes first
    max_transfers: int = 1024  # transfers remembered in all (finished ones go first)
    max_transfer_bytes: int = 1 << 44  # 16 TiB: what one offer may claim
    max_offer_files: int = 1000  # files in one offer (a folder)
    # /away (issue 11): the away text a peer shows (a longer one from the network drops the
    # frame), and the senders remembered for the one-auto-reply-per-interval rule.
    max_away_chars: int = 200
    max_away_replies: int = 1024
    max_offer_path_bytes: int = 2048  # one file's path inside a folder, once cleaned
    max_open_outgoing: int = 256  # our own transfers not finished (kept across restarts)
