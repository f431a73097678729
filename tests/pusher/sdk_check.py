"""The official Pusher server SDK (PyPI `pusher`) against Switchboard's
Pusher door: every HTTP API call, channel and user authorization, and the
API's refusals. Clients are pysher (see pysher_check.py) and, where pysher
cannot (presence with an external auth, sign-in), raw frames over
websocket-client. Run by tests/pusher.rs; prints one `ok - ...` line per
check and exits non-zero on the first failure.

Usage: sdk_check.py HOST PORT KEY SECRET APP_ID API_KEY
"""

import hashlib
import hmac
import json
import time

import pusher
import requests
import websocket

from pysher_check import APP_ID, HOST, KEY, PORT, SECRET, WAIT, Client, ok, wait_until

sdk = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET, host=HOST, port=PORT, ssl=False)


class Raw:
    """Pusher frames over a bare WebSocket."""

    def __init__(self):
        self.ws = websocket.create_connection(
            f"ws://{HOST}:{PORT}/app/{KEY}?protocol=7&client=raw&version=0", timeout=WAIT)
        hello = self.next("pusher:connection_established")
        self.socket_id = json.loads(hello["data"])["socket_id"]

    def send(self, event, data, channel=None):
        frame = {"event": event, "data": data}
        if channel:
            frame["channel"] = channel
        self.ws.send(json.dumps(frame))

    def next(self, event):
        while True:
            frame = json.loads(self.ws.recv())
            if frame["event"] == event:
                return frame

    def closed(self):
        """The close code the server ends the connection with."""
        while True:
            op, data = self.ws.recv_data(control_frame=True)
            if op == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(data[:2], "big")


def trigger_and_exclusion():
    a, b = Client().start(), Client().start()
    a.join("news")
    b.join("news")
    b.join("sports")
    assert sdk.trigger(["news", "sports"], "score", {"n": 1}) == {}
    assert json.loads(b.wait("news", "score")) == {"n": 1}
    assert json.loads(b.wait("sports", "score")) == {"n": 1}
    ok("events: one trigger to several channels")
    sdk.trigger("news", "quiet", "for b", socket_id=a.connection.socket_id)
    sdk.trigger("news", "loud", "for all")
    b.wait("news", "quiet")
    a.wait("news", "loud")
    assert a.find("news", "quiet") is None, "socket_id was not excluded"
    ok("events: socket_id excluded")
    sdk.trigger_batch([
        {"channel": "news", "name": "b1", "data": "1"},
        {"channel": "sports", "name": "b2", "data": {"x": 2}},
    ])
    b.wait("news", "b1")
    assert json.loads(b.wait("sports", "b2")) == {"x": 2}
    ok("batch_events")
    info = sdk.channels_info(attributes=["subscription_count"])
    assert info["channels"]["news"] == {"subscription_count": 2}, info
    assert info["channels"]["sports"] == {"subscription_count": 1}, info
    assert sdk.channels_info(prefix_filter="spo") == {"channels": {"sports": {}}}
    ok("channels: filter_by_prefix and info")
    assert sdk.channel_info("news", ["subscription_count"]) == {
        "occupied": True, "subscription_count": 2}
    assert sdk.channel_info("empty") == {"occupied": False}
    ok("channel: occupied and subscription_count")
    a.disconnect()
    b.disconnect()


def authorization():
    a, b = Client().start(), Client().start()
    for c in (a, b):
        auth = sdk.authenticate("private-sdk", c.connection.socket_id)["auth"]
        c.subscribe("private-sdk", auth=auth)
        c.wait("private-sdk", "pusher_internal:subscription_succeeded")
    a.channel("private-sdk").trigger("client-x", {"ok": True})
    assert b.wait("private-sdk", "client-x") == {"ok": True}
    ok("authenticate: private channel signature accepted")
    raw = Raw()
    member = {"user_id": "carol", "user_info": {"role": "admin"}}
    signed = sdk.authenticate("presence-sdk", raw.socket_id, member)
    raw.send("pusher:subscribe", {"channel": "presence-sdk", **signed})
    ok_frame = raw.next("pusher_internal:subscription_succeeded")
    members = json.loads(ok_frame["data"])["presence"]
    assert members["hash"] == {"carol": {"role": "admin"}}, members
    assert sdk.users_info("presence-sdk") == {"users": [{"id": "carol"}]}
    assert sdk.channel_info("presence-sdk", ["user_count", "subscription_count"]) == {
        "occupied": True, "user_count": 1, "subscription_count": 1}
    assert sdk.channels_info("presence-", ["user_count"]) == {
        "channels": {"presence-sdk": {"user_count": 1}}}
    ok("authenticate: presence channel signature and members; users and user_count")
    a.disconnect()
    b.disconnect()
    return raw


def signin_and_terminate():
    raw = Raw()
    signed = sdk.authenticate_user(raw.socket_id, {"id": "dave"})
    raw.send("pusher:signin", signed)
    raw.next("pusher:signin_success")
    ok("authenticate_user: sign-in accepted")
    assert sdk.terminate_user_connections("dave") == {}
    assert raw.closed() == 4009
    ok("terminate_user_connections: the user's connection closed")


def refusals():
    wrong = pusher.Pusher(app_id=APP_ID, key=KEY, secret="not-the-secret",
                          host=HOST, port=PORT, ssl=False)
    try:
        wrong.trigger("news", "x", "y")
        raise AssertionError("a wrong secret was accepted")
    except pusher.errors.PusherBadAuth as e:
        assert "Invalid signature" in str(e), e
    other = pusher.Pusher(app_id="999999", key=KEY, secret=SECRET,
                          host=HOST, port=PORT, ssl=False)
    try:
        other.trigger("news", "x", "y")
        raise AssertionError("an unknown app was accepted")
    except pusher.errors.PusherBadStatus as e:
        assert str(e).startswith("404"), e
    # An old timestamp, signed correctly.
    path = f"/apps/{APP_ID}/channels"
    params = {"auth_key": KEY, "auth_timestamp": str(int(time.time()) - 3600),
              "auth_version": "1.0"}
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    sig = hmac.new(SECRET.encode(), f"GET\n{path}\n{query}".encode(), hashlib.sha256)
    r = requests.get(f"http://{HOST}:{PORT}{path}",
                     params={**params, "auth_signature": sig.hexdigest()}, timeout=WAIT)
    assert r.status_code == 401 and "expired" in r.text, (r.status_code, r.text)
    try:
        sdk.channels_info(prefix_filter="news", attributes=["user_count"])
        raise AssertionError("user_count on a public prefix was accepted")
    except pusher.errors.PusherBadRequest:
        pass
    try:
        sdk.trigger_batch([{"channel": "news", "name": "x", "data": "1"}] * 11)
        raise AssertionError("a batch of 11 was accepted")
    except pusher.errors.PusherBadRequest:
        pass
    ok("refusals: bad signature 401, unknown app 404, expired timestamp 401, bad requests 400")


trigger_and_exclusion()
raw = authorization()
signin_and_terminate()
refusals()
raw.ws.close()
print("sdk: all checks ok", flush=True)
