import { Module } from '@nestjs/common';
import { AuditModule } from '../audit/audit.module.js';
import { EnrollmentController } from './enrollment.controller.js';
import { EnrollmentService } from './enrollment.service.js';

@Module({ imports: [AuditModule], controllers: [EnrollmentController], providers: [EnrollmentService] })
export class EnrollmentModule {}
