import { Module } from '@nestjs/common';
import { EventStreamHub } from './event-stream.hub.js';
import { StreamController } from './stream.controller.js';
import { STREAM_SETTINGS, loadStreamSettings } from './stream.settings.js';

@Module({
  controllers: [StreamController],
  providers: [EventStreamHub, { provide: STREAM_SETTINGS, useFactory: () => loadStreamSettings() }],
  exports: [EventStreamHub],
})
export class StreamModule {}
