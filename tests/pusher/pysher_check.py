"""Pysher (PyPI) against Switchboard's Pusher door: public, private and
presence channels, and client events. Run by tests/pusher.rs; prints one
`ok - ...` line per check and exits non-zero on the first failure.

Usage: pysher_check.py HOST PORT KEY SECRET APP_ID API_KEY
"""

import json
import sys
import threading
import time

import pysher
import requests

HOST, PORT, KEY, SECRET, APP_ID, API_KEY = sys.argv[1:7]
PORT = int(PORT)
WAIT = 10.0


def wait_until(what, cond):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Client(pysher.Pusher):
    """A pysher client that records every channel event it is handed,
    before pysher looks the channel up (pysher registers a channel only
    after sending the subscribe, so an answer can beat it)."""

    def __init__(self, user_data=None):
        self.log = []
        self.lock = threading.Lock()
        super().__init__(KEY, secure=False, custom_host=HOST, port=PORT,
                         secret=SECRET, user_data=user_data, reconnect_interval=1)
        # websocket-client's reader waits in select() without a timeout
        # unless it pings; a disconnect from this thread closes the socket
        # under it, and without a timeout it would never look again.
        self.connection.socket_kwargs.update(ping_interval=2, ping_timeout=1)

    def _connection_handler(self, event_name, data, channel_name):
        with self.lock:
            self.log.append((channel_name, event_name, data))
        super()._connection_handler(event_name, data, channel_name)

    def start(self):
        self.connect()
        wait_until("connection", lambda: self.connection.state == "connected"
                   and self.connection.socket_id)
        return self

    def find(self, channel, event, pred=lambda data: True):
        with self.lock:
            for c, e, d in self.log:
                if c == channel and e == event and pred(d):
                    return (d,)
        return None

    def wait(self, channel, event, pred=lambda data: True):
        return wait_until(f"{event} on {channel}",
                          lambda: self.find(channel, event, pred))[0]

    def join(self, channel):
        self.subscribe(channel)
        return self.wait(channel, "pusher_internal:subscription_succeeded")


def native_publish(channel, event, data):
    """A backend event through the native server API, as the Pusher door
    maps the app's channels (docs/pusher.md)."""
    r = requests.post(f"http://{HOST}:{PORT}/api/publish",
                      headers={"authorization": f"apikey {API_KEY}"},
                      json={"channel": f"pusher.{APP_ID}:{channel}",
                            "data": {"event": event, "data": data}},
                      timeout=WAIT)
    assert r.status_code == 200, r.text


def ok(name):
    print(f"ok - {name}", flush=True)


def public():
    a = Client().start()
    a.join("news")
    native_publish("news", "greet", json.dumps({"hello": 1}))
    data = a.wait("news", "greet")
    assert json.loads(data) == {"hello": 1}, data
    ok("public channel: subscribe and receive an event")
    a.disconnect()


def private():
    a, b = Client().start(), Client().start()
    a.join("private-room")
    b.join("private-room")
    a.channel("private-room").trigger("client-typing", {"from": "a"})
    assert b.wait("private-room", "client-typing") == {"from": "a"}
    # Events on a channel keep one order: once a has b's answer, its own
    # event would have come before it, had it been echoed.
    b.channel("private-room").trigger("client-answer", {"from": "b"})
    a.wait("private-room", "client-answer")
    assert a.find("private-room", "client-typing") is None, "echoed to the sender"
    ok("private channel: signed subscribe, client event to others, not echoed")
    a.disconnect()
    b.disconnect()


def presence():
    alice = Client({"user_id": "alice", "user_info": {"name": "Alice"}}).start()
    first = json.loads(alice.join("presence-room"))["presence"]
    assert first["ids"] == ["alice"] and first["count"] == 1, first
    bob = Client({"user_id": "bob", "user_info": {"name": "Bob"}}).start()
    members = json.loads(bob.join("presence-room"))["presence"]
    assert sorted(members["ids"]) == ["alice", "bob"], members
    assert members["hash"]["alice"] == {"name": "Alice"}, members
    added = json.loads(alice.wait("presence-room", "pusher_internal:member_added"))
    assert added == {"user_id": "bob", "user_info": {"name": "Bob"}}, added
    ok("presence channel: members on subscribe, member_added")
    bob.channel("presence-room").trigger("client-wave", {"n": 1})
    assert alice.wait("presence-room", "client-wave") == {"n": 1}
    ok("presence channel: client event")
    bob.disconnect()
    removed = json.loads(alice.wait("presence-room", "pusher_internal:member_removed"))
    assert removed == {"user_id": "bob"}, removed
    ok("presence channel: member_removed when the user's last connection goes")
    alice.disconnect()


if __name__ == "__main__":
    public()
    private()
    presence()
    print("pysher: all checks ok", flush=True)
