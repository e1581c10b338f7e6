import { Global, Module } from '@nestjs/common';
import { FleetEvents } from './fleet-events.js';
import { PendingWrites } from './pending-writes.js';

@Global()
@Module({ providers: [FleetEvents, PendingWrites], exports: [FleetEvents, PendingWrites] })
export class EventsModule {}
