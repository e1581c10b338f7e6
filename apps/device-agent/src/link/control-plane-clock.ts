/**
 * [P-3.6] The control plane's clock as this agent sees it, learnt once per connection from the outbox ack that answers
 * the connection's hello (it names the hello's sessionId). That ack was sent after the hello arrived, so its `ts`
 * lies between our hello's send time and the ack's receipt on the CP's clock: the offset (CP - local) is known
 * within half that round trip.
 *
 * With it the agent checks a request's absolute `deadline` instead of granting `deadline - sentAt` from receipt
 * (which gives a request the broker held for hours a fresh budget), and recognises a request sent before the
 * connection existed: one the persistent session queued while the link was down, that the gateway has long since
 * failed over.
 */
export class ControlPlaneClock {
  private session: { id: string; connectedAt: number; helloAt: number } | undefined;
  /** offset bounds (CP - local) for the current session, once its hello was answered */
  private bounds: { low: number; high: number } | undefined;

  constructor(private readonly now: () => number = Date.now) {}

  /** A new connection (local time of its CONNACK); its hello is sent next. Forgets the previous session's sync. */
  connected(sessionId: string, connectedAt = this.now()): void {
    this.session = { id: sessionId, connectedAt, helloAt: connectedAt };
    this.bounds = undefined;
  }

  /** Just before the hello goes out. */
  helloSent(at = this.now()): void {
    if (this.session) this.session.helloAt = at;
  }

  /** An outbox ack; true when it is the answer to this session's hello and the clock is now synced. */
  ack(ack: { ts: number; sessionId?: string | undefined }, receivedAt = this.now()): boolean {
    if (!this.session || ack.sessionId !== this.session.id || this.bounds) return false;
    // helloAt + offset <= ts <= receivedAt + offset
    this.bounds = { low: ack.ts - receivedAt, high: ack.ts - this.session.helloAt };
    return true;
  }

  get synced(): boolean {
    return this.bounds !== undefined;
  }

  /** The CP's clock now, best estimate; undefined before the sync. */
  cpNow(at = this.now()): number | undefined {
    return this.bounds ? at + (this.bounds.low + this.bounds.high) / 2 : undefined;
  }

  /** A CP timestamp on the local clock, best estimate. */
  toLocal(cpTs: number): number | undefined {
    return this.bounds ? cpTs - (this.bounds.low + this.bounds.high) / 2 : undefined;
  }

  /**
   * Whether a message the CP sent at `sentAt` (its clock) certainly predates this connection. Uses the earliest the
   * connection can have started on the CP's clock, so a request sent on this connection is never taken for stale.
   */
  sentBeforeConnection(sentAt: number): boolean {
    if (!this.session || !this.bounds) return false;
    return sentAt < this.session.connectedAt + this.bounds.low;
  }
}
