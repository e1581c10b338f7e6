import { Module } from '@nestjs/common';
import { AuthModule } from '../../identity/auth/auth.module.js';
import { CONFIG } from '../../platform/tokens.js';
import { EventStreamHub } from './event-stream.hub.js';
import { StreamController } from './stream.controller.js';
import { STREAM_SETTINGS, type StreamSettings } from './stream.settings.js';

@Module({
  imports: [AuthModule],
  controllers: [StreamController],
  providers: [EventStreamHub, { provide: STREAM_SETTINGS, useFactory: (config: { stream: StreamSettings }) => config.stream, inject: [CONFIG] }],
  exports: [EventStreamHub],
})
export class StreamModule {}
