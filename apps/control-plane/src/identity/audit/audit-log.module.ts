import { Module } from '@nestjs/common';
import { AuditLogController } from './audit-log.controller.js';

/** Reading the audit log (writing it is AuditService's, in src/audit). */
@Module({ controllers: [AuditLogController] })
export class AuditLogModule {}
