-- Device registry and liveness: the device's current MQTT session (P-3.2 sessionId rule), its status history and the
-- events devices report (outbox kind `event`, P-3.10). History tables have no foreign keys: rows outlive devices.

-- AlterTable
ALTER TABLE "devices" ADD COLUMN "session_id" TEXT;

-- CreateTable
CREATE TABLE "device_status_changes" (
    "id" TEXT NOT NULL,
    "device_id" TEXT NOT NULL,
    "status" "device_status" NOT NULL,
    "previous" "device_status",
    "reason" TEXT,
    "at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "device_status_changes_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "device_events" (
    "id" TEXT NOT NULL,
    "device_id" TEXT NOT NULL,
    "seq" BIGINT,
    "at" TIMESTAMP(3) NOT NULL,
    "level" TEXT NOT NULL,
    "code" TEXT NOT NULL,
    "message" TEXT NOT NULL,
    "model" TEXT,
    "request_id" TEXT,
    "details" JSONB,
    "received_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "device_events_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "device_status_changes_device_id_at_idx" ON "device_status_changes"("device_id", "at");

-- CreateIndex
CREATE INDEX "device_status_changes_at_idx" ON "device_status_changes"("at");

-- CreateIndex
CREATE UNIQUE INDEX "device_events_device_id_seq_key" ON "device_events"("device_id", "seq");

-- CreateIndex
CREATE INDEX "device_events_device_id_at_idx" ON "device_events"("device_id", "at");

-- CreateIndex
CREATE INDEX "device_events_received_at_idx" ON "device_events"("received_at");
