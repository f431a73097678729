// The memory floods of issue 14, against a running `switchboard dev`:
//   node --experimental-websocket memory_flood.mjs URL CONNS SECONDS PAYLOAD_BYTES CHANNELS_PER_CONN
// Each connection publishes at 50 frames/s (the default rate limit) to
// channel flood:<conn>-<i % CHANNELS_PER_CONN> (0: a new channel every
// time) with a PAYLOAD_BYTES string, and counts the replies by outcome.
// docs/benchmarks.md, "Memory under floods", runs it.
const [url, conns, seconds, payloadBytes, perConn] = process.argv.slice(2);
const pad = "x".repeat(Number(payloadBytes));
const outcomes = {};
const count = (k) => { outcomes[k] = (outcomes[k] || 0) + 1; };
const end = Date.now() + Number(seconds) * 1000;

function run(conn) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    let i = 0;
    let timer;
    ws.onopen = () => {
      timer = setInterval(() => {
        if (Date.now() >= end) { clearInterval(timer); setTimeout(() => { ws.close(); resolve(); }, 1000); return; }
        const n = Number(perConn) === 0 ? i : i % Number(perConn);
        ws.send(JSON.stringify({ type: "publish", id: i, channel: `flood:${conn}-${n}`, data: { i, pad } }));
        i++;
      }, 20);
    };
    ws.onmessage = (ev) => {
      const f = JSON.parse(ev.data);
      if (f.type === "response") count("ok");
      else if (f.type === "error") count(`error ${f.code}`);
    };
    ws.onclose = () => { clearInterval(timer); resolve(); };
    ws.onerror = () => count("socket error");
  });
}

await Promise.all([...Array(Number(conns)).keys()].map(run));
console.log(JSON.stringify(outcomes));
