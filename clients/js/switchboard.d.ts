// Types of the Switchboard JavaScript client (switchboard.js).
// The wire formats are those of docs/protocol.md.

/** A position in a channel's stream. */
export interface Position {
  offset: number;
  epoch: string;
}

/** A `message` frame: one publication. */
export interface Publication {
  type: "message";
  channel: string;
  /** The publisher's user id; `""` for anonymous publishers. */
  from: string;
  data: unknown;
  offset: number;
  epoch: string;
  /** When the server accepted it, in ms since the Unix epoch. */
  timestamp: number;
}

/** One connection in a presence list or a join/leave event. */
export interface ClientInfo {
  client_id: string;
  user_id: string;
  /** The `info` claim of the connection's token, if any. */
  info?: unknown;
}

export interface PresenceReply {
  channel: string;
  clients: ClientInfo[];
}

export interface PresenceStatsReply {
  channel: string;
  num_clients: number;
  num_users: number;
}

export interface HistoryReply {
  channel: string;
  /** The channel's current position. */
  offset: number;
  epoch: string;
  publications: Publication[];
  /** Present when `since` was given: whether nothing after it was lost. */
  complete?: boolean;
}

export interface HistoryOptions {
  /** Most publications to return (the server caps it). */
  limit?: number;
  /** Newest first. */
  reverse?: boolean;
  /** Only publications after this position. */
  since?: Position;
  timeout?: number;
}

export interface PublishOptions {
  /** Wait for the server's acknowledgement (default true). */
  ack?: boolean;
  /** Milliseconds, including time spent waiting for a connection. */
  timeout?: number;
}

export interface BackoffOptions {
  /** Ceiling of the first retry delay, ms (default 500). */
  initialDelay?: number;
  /** Largest ceiling, ms (default 20000). */
  maxDelay?: number;
  /** Growth of the ceiling per failed attempt (default 2). */
  factor?: number;
  /** Jitter source in [0, 1) (default Math.random). */
  random?: () => number;
}

export interface ClientOptions {
  /** A fixed token (JWT). */
  token?: string;
  /**
   * Fetches a token: called before every connection attempt and before the
   * current token expires (then sent as `refresh`). Takes precedence over `token`.
   */
  getToken?: () => Promise<string> | string;
  /** Reply timeout of requests, ms, including time waiting for a connection (default 10000). */
  requestTimeout?: number;
  /** Time to open and authenticate a connection, ms (default 10000). */
  connectTimeout?: number;
  /** Ping after this much silence from the server, ms (default 20000). */
  pingInterval?: number;
  /** A ping unanswered this long means the connection is dead, ms (default 10000). */
  pongTimeout?: number;
  /** A connection up this long resets the backoff, ms (default 10000). */
  stableAfter?: number;
  /** Refresh the token this long before it expires (at most a fifth of its lifetime), ms (default 30000). */
  refreshMargin?: number;
  /** Most requests waiting for a connection (default 1000). */
  maxQueued?: number;
  /**
   * Offer the `switchboard.batch` subprotocol (default true): the server then
   * packs the messages that are ready into one frame, one per line.
   */
  batchFrames?: boolean;
  backoff?: BackoffOptions;
  /** A WebSocket constructor; defaults to `globalThis.WebSocket`. */
  WebSocket?: unknown;
}

export type State = "disconnected" | "connecting" | "connected";
export declare const State: {
  readonly DISCONNECTED: "disconnected";
  readonly CONNECTING: "connecting";
  readonly CONNECTED: "connected";
};

export type SubscriptionStateName = "unsubscribed" | "subscribing" | "subscribed";
export declare const SubscriptionState: {
  readonly UNSUBSCRIBED: "unsubscribed";
  readonly SUBSCRIBING: "subscribing";
  readonly SUBSCRIBED: "subscribed";
};

/** Why a connection ended: a server close code (docs/protocol.md §7) or a {@link ClientCloseCode}. */
export interface CloseContext {
  code: number;
  reason: string;
}

export interface ConnectingEvent extends CloseContext {
  /** Failed attempts since the last stable connection. */
  attempt: number;
  /** Milliseconds until the next attempt. */
  delay: number;
}

export interface ConnectedEvent {
  /** Set when connected with a token. */
  clientId: string | null;
  /** `""` when anonymous. */
  userId: string;
}

export interface ClientEvents {
  state: { state: State; previous: State };
  connecting: ConnectingEvent;
  connected: ConnectedEvent;
  /** Final: the client will not reconnect by itself. */
  disconnected: CloseContext;
  /** Problems that do not end the client: token callback failures, errors of publishes without ack. */
  error: { error: SwitchboardError };
  /** A new token was accepted by the server. */
  refreshed: { expiresAt: number | null };
  /** Publications on channels without a Subscription: the user's personal channel. */
  message: Publication;
}

export interface SubscribedEvent {
  channel: string;
  offset: number;
  epoch: string;
  recoverable: boolean;
  /** Whether the subscription resumed from a known position. */
  wasRecovering: boolean;
  /** Whether every publication since that position was delivered (false when not recovering). */
  recovered: boolean;
  /** How many retained publications follow as `message` events. */
  publications: number;
}

export interface SubscriptionEvents {
  state: { state: SubscriptionStateName; previous: SubscriptionStateName };
  subscribing: CloseContext;
  subscribed: SubscribedEvent;
  unsubscribed: CloseContext;
  message: Publication;
  join: ClientInfo;
  leave: ClientInfo;
  error: { error: SwitchboardError };
}

/** Not exported: the listener methods of Client and Subscription. */
declare class Emitter<Events extends Record<string, any>> {
  on<K extends keyof Events>(event: K, listener: (arg: Events[K]) => void): () => void;
  off<K extends keyof Events>(event: K, listener: (arg: Events[K]) => void): void;
  once<K extends keyof Events>(event: K, listener: (arg: Events[K]) => void): () => void;
}

export declare class Client extends Emitter<ClientEvents> {
  constructor(url: string, options?: ClientOptions);
  readonly state: State;
  readonly clientId: string | null;
  readonly userId: string | null;
  connect(): void;
  disconnect(): void;
  reconnect(): void;
  subscribe(channel: string, options?: { since?: Position }): Subscription;
  getSubscription(channel: string): Subscription | null;
  subscriptions(): Subscription[];
  removeSubscription(subscription: Subscription): void;
  publish(channel: string, data: unknown, options: PublishOptions & { ack: false }): Promise<undefined>;
  publish(channel: string, data: unknown, options?: PublishOptions): Promise<Position>;
  /** Every client, all pages followed (`pageSize`: clients per request, 1 to 1000). */
  presence(channel: string, options?: { pageSize?: number }): Promise<PresenceReply>;
  presenceStats(channel: string): Promise<PresenceStatsReply>;
  history(channel: string, options?: HistoryOptions): Promise<HistoryReply>;
  /** Round trip in ms. */
  ping(): Promise<number>;
  /** Any request frame without `id`; resolves with the reply frame. */
  request(frame: { type: string; [field: string]: unknown }, timeout?: number): Promise<any>;
}

export declare class Subscription extends Emitter<SubscriptionEvents> {
  readonly channel: string;
  readonly state: SubscriptionStateName;
  /** Last position delivered: where a resubscription resumes. */
  readonly position: Position | null;
  readonly recoverable: boolean;
  ready(timeout?: number): Promise<SubscribedEvent | null>;
  unsubscribe(): void;
  publish(data: unknown, options: PublishOptions & { ack: false }): Promise<undefined>;
  publish(data: unknown, options?: PublishOptions): Promise<Position>;
  presence(): Promise<PresenceReply>;
  presenceStats(): Promise<PresenceStatsReply>;
  history(options?: HistoryOptions): Promise<HistoryReply>;
}

export declare const ClientErrorCode: {
  readonly TIMEOUT: 1;
  readonly CONNECTION_LOST: 2;
  readonly CLIENT_CLOSED: 3;
  readonly QUEUE_FULL: 4;
  readonly TOKEN_UNAVAILABLE: 5;
  readonly UNSUBSCRIBED: 6;
};

export declare const ClientCloseCode: {
  readonly DISCONNECT_CALLED: 3000;
  readonly NO_PONG: 3001;
  readonly TRANSPORT_CLOSED: 3002;
  readonly RECONNECT_CALLED: 3003;
  readonly TOKEN_UNAVAILABLE: 3004;
  readonly CONNECT_TIMEOUT: 3005;
  readonly SUBSCRIBE_TIMEOUT: 3006;
};

export declare class SwitchboardError extends Error {
  constructor(message: string, code: number, options?: { cause?: unknown });
  /** A server error code (100-115) or a {@link ClientErrorCode}. */
  readonly code: number;
  /** Whether the same request may succeed later. */
  readonly temporary: boolean;
}

export declare class Backoff {
  constructor(options?: BackoffOptions);
  attempt: number;
  ceiling(): number;
  next(): number;
  reset(): void;
}
