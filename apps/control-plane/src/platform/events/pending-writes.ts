import { Injectable } from '@nestjs/common';

/**
 * Writers that batch rows off the request path register their flush here; a reader that must see everything already
 * accepted (usage reads the gateway's request rows) flushes them all first. It lets observability read what the
 * gateway writes without the two importing each other.
 */
@Injectable()
export class PendingWrites {
  private readonly flushers = new Map<string, () => Promise<void>>();

  register(name: string, flush: () => Promise<void>): void {
    this.flushers.set(name, flush);
  }

  async flushAll(): Promise<void> {
    await Promise.all([...this.flushers.values()].map((flush) => flush()));
  }
}
