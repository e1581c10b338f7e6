import { Module } from '@nestjs/common';
import { AuditLogController } from './audit-log.controller.js';
import { AuditService } from './audit.service.js';

/** The audit log: AuditService writes it (for every domain that changes something), the controller reads it. */
@Module({ controllers: [AuditLogController], providers: [AuditService], exports: [AuditService] })
export class AuditModule {}
