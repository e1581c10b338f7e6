-- AlterTable: every attempt of a gateway request (device, start, end, why it ended, tokens, continuation)
ALTER TABLE "inference_requests" ADD COLUMN "attempts" JSONB NOT NULL DEFAULT '[]';
