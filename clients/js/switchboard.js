// Switchboard client for browsers and Node 20+ (docs/protocol.md): one
// WebSocket that reconnects with capped, jittered backoff, resubscribes
// from the last position it delivered and says whether continuity held,
// sends requests with ids and timeouts, and notices half-open connections.
// No dependencies; types in switchboard.d.ts.

export { Client, State } from "./src/client.js";
export { Subscription, SubscriptionState } from "./src/subscription.js";
export { ClientErrorCode, SwitchboardError } from "./src/errors.js";
export { ClientCloseCode } from "./src/advice.js";
export { Backoff } from "./src/backoff.js";
