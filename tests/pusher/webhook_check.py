"""Webhooks from Switchboard's Pusher door, checked with the official
`pusher` server SDK (PyPI): every request's signature is verified with
`Pusher.validate_webhook`, as an app's backend does. A pysher client makes
the events. The endpoint refuses its first request (HTTP 500): the same
events must come again. Run by tests/pusher.rs; prints `ok - ...` lines.

Usage: webhook_check.py HOST PORT KEY SECRET APP_ID HOOK_PORT
"""

import http.server
import json
import sys
import threading

import pusher

HOOK_PORT = int(sys.argv[6])
# pysher_check reads HOST PORT KEY SECRET APP_ID API_KEY from argv[1:7];
# the API key is not used here.
sys.argv = sys.argv[:6] + ["-"]
import pysher_check as pc  # noqa: E402  (its Client and wait helpers)

KEY, SECRET, APP_ID = pc.KEY, pc.SECRET, pc.APP_ID
SDK = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET)

lock = threading.Lock()
events = []        # every event of every request the SDK accepted
refused = []       # bodies answered with 500
requests_seen = [0]
invalid = []


class Hooks(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        key = self.headers.get("X-Pusher-Key")
        signature = self.headers.get("X-Pusher-Signature")
        with lock:
            requests_seen[0] += 1
            first = requests_seen[0] == 1
        if first:
            with lock:
                refused.append(json.loads(body)["events"])
            self.send_response(500)
            self.end_headers()
            return
        checked = SDK.validate_webhook(key=key, signature=signature, body=body)
        tampered = SDK.validate_webhook(key=key, signature=signature, body=body + " ")
        with lock:
            if checked is None or tampered is not None:
                invalid.append(body)
            else:
                events.extend(checked["events"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def received(pred):
    with lock:
        return [e for e in events if pred(e)]


def wait_for(name, channel, **fields):
    def match(e):
        return (e["name"] == name and e["channel"] == channel
                and all(e.get(k) == v for k, v in fields.items()))
    return pc.wait_until(f"webhook {name} {channel} {fields}", lambda: received(match))


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", HOOK_PORT), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    a = pc.Client().start()
    a.join("news")
    wait_for("channel_occupied", "news")
    with lock:
        assert refused and refused[0][0] == {"name": "channel_occupied", "channel": "news"}, refused
    pc.ok("channel_occupied, signed; a refused request is retried with the same events")

    alice = pc.Client({"user_id": "alice", "user_info": {}}).start()
    alice.join("presence-room")
    alice2 = pc.Client({"user_id": "alice", "user_info": {}}).start()
    alice2.join("presence-room")
    bob = pc.Client({"user_id": "bob", "user_info": {}}).start()
    bob.join("presence-room")
    wait_for("member_added", "presence-room", user_id="bob")
    assert len(received(lambda e: e["name"] == "member_added" and e["user_id"] == "alice")) == 1
    pc.ok("member_added once per user, not per connection")

    bob.channel("presence-room").trigger("client-wave", {"n": 1})
    e = wait_for("client_event", "presence-room", event="client-wave")[0]
    assert json.loads(e["data"]) == {"n": 1}, e
    assert e["socket_id"] == bob.connection.socket_id and e["user_id"] == "bob", e
    pc.ok("client_event with its data, socket_id and user_id")

    bob.disconnect()
    wait_for("member_removed", "presence-room", user_id="bob")
    alice.disconnect()
    alice2.disconnect()
    wait_for("member_removed", "presence-room", user_id="alice")
    wait_for("channel_vacated", "presence-room")
    a.disconnect()
    wait_for("channel_vacated", "news")
    pc.ok("member_removed on a user's last connection, channel_vacated")

    with lock:
        assert not invalid, invalid
        seen = [json.dumps(e, sort_keys=True) for e in events]
    assert len(seen) == len(set(seen)), f"an event came twice: {seen}"
    removed_alice = [e for e in events if e["name"] == "member_removed" and e["user_id"] == "alice"]
    assert len(removed_alice) == 1, events
    pc.ok("every request verified by the SDK; no event twice")
    print("webhooks: all checks ok", flush=True)


if __name__ == "__main__":
    main()
