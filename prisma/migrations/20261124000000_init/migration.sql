-- CreateEnum
CREATE TYPE "device_status" AS ENUM ('online', 'offline', 'draining', 'revoked');

-- CreateEnum
CREATE TYPE "model_tier" AS ENUM ('small', 'medium', 'large');

-- CreateEnum
CREATE TYPE "model_state_name" AS ENUM ('pending', 'downloading', 'verifying', 'loading', 'ready', 'unloading', 'failed');

-- CreateEnum
CREATE TYPE "request_outcome" AS ENUM ('success', 'failed', 'timeout', 'cancelled', 'rejected');

-- CreateEnum
CREATE TYPE "alert_severity" AS ENUM ('info', 'warning', 'critical');

-- CreateEnum
CREATE TYPE "alert_state" AS ENUM ('open', 'resolved');

-- CreateEnum
CREATE TYPE "user_role" AS ENUM ('admin', 'operator', 'viewer');

-- CreateEnum
CREATE TYPE "api_key_scope" AS ENUM ('admin', 'gateway');

-- CreateTable
CREATE TABLE "devices" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "labels" JSONB NOT NULL DEFAULT '{}',
    "hardware" JSONB NOT NULL DEFAULT '{}',
    "limits" JSONB,
    "agent_version" TEXT,
    "status" "device_status" NOT NULL DEFAULT 'offline',
    "last_seen_at" TIMESTAMP(3),
    "desired_version" INTEGER NOT NULL DEFAULT 0,
    "reported_desired_version" INTEGER NOT NULL DEFAULT 0,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "devices_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "device_credentials" (
    "id" TEXT NOT NULL,
    "device_id" TEXT NOT NULL,
    "mqtt_username" TEXT NOT NULL,
    "secret_hash" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "revoked_at" TIMESTAMP(3),

    CONSTRAINT "device_credentials_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "enrollment_tokens" (
    "id" TEXT NOT NULL,
    "token_hash" TEXT NOT NULL,
    "prefix" TEXT NOT NULL,
    "note" TEXT,
    "expires_at" TIMESTAMP(3) NOT NULL,
    "remaining_uses" INTEGER NOT NULL,
    "labels" JSONB NOT NULL DEFAULT '{}',
    "created_by_id" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "revoked_at" TIMESTAMP(3),

    CONSTRAINT "enrollment_tokens_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "device_outbox_cursors" (
    "device_id" TEXT NOT NULL,
    "last_acked_seq" BIGINT NOT NULL DEFAULT 0,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "device_outbox_cursors_pkey" PRIMARY KEY ("device_id")
);

-- CreateTable
CREATE TABLE "models" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "source_url" TEXT NOT NULL,
    "sha256" TEXT NOT NULL,
    "size_bytes" BIGINT NOT NULL,
    "quantization" TEXT NOT NULL,
    "memory_bytes" BIGINT NOT NULL,
    "context_length" INTEGER NOT NULL,
    "tier" "model_tier" NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "models_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "deployments" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "model_id" TEXT NOT NULL,
    "replicas" INTEGER NOT NULL,
    "label_selector" JSONB NOT NULL DEFAULT '{}',
    "pinned_device_ids" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "context_size" INTEGER,
    "parallel" INTEGER NOT NULL DEFAULT 1,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "deployments_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "placements" (
    "id" TEXT NOT NULL,
    "device_id" TEXT NOT NULL,
    "model_id" TEXT NOT NULL,
    "deployment_id" TEXT,
    "desired_version" INTEGER NOT NULL,
    "loaded" BOOLEAN NOT NULL DEFAULT true,
    "pinned" BOOLEAN NOT NULL DEFAULT false,
    "context_size" INTEGER,
    "parallel" INTEGER NOT NULL DEFAULT 1,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "placements_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "model_states" (
    "device_id" TEXT NOT NULL,
    "model_name" TEXT NOT NULL,
    "sha256" TEXT,
    "state" "model_state_name" NOT NULL,
    "loaded" BOOLEAN NOT NULL DEFAULT false,
    "progress" DOUBLE PRECISION,
    "received_bytes" BIGINT,
    "total_bytes" BIGINT,
    "error_code" TEXT,
    "error_message" TEXT,
    "desired_version" INTEGER NOT NULL DEFAULT 0,
    "updated_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "model_states_pkey" PRIMARY KEY ("device_id","model_name")
);

-- CreateTable
CREATE TABLE "inference_requests" (
    "request_id" TEXT NOT NULL,
    "requested_model" TEXT NOT NULL,
    "model" TEXT,
    "tier" "model_tier",
    "device_id" TEXT,
    "cloud" BOOLEAN NOT NULL DEFAULT false,
    "latency_ms" INTEGER,
    "ttft_ms" INTEGER,
    "tokens_in" INTEGER NOT NULL DEFAULT 0,
    "tokens_out" INTEGER NOT NULL DEFAULT 0,
    "outcome" "request_outcome" NOT NULL,
    "error_code" TEXT,
    "retries" INTEGER NOT NULL DEFAULT 0,
    "stream" BOOLEAN NOT NULL DEFAULT false,
    "api_key_id" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "inference_requests_pkey" PRIMARY KEY ("request_id")
);

-- CreateTable
CREATE TABLE "request_rollups" (
    "bucket_start" TIMESTAMP(3) NOT NULL,
    "bucket_seconds" INTEGER NOT NULL,
    "model" TEXT NOT NULL,
    "device_id" TEXT NOT NULL DEFAULT '',
    "requests" INTEGER NOT NULL DEFAULT 0,
    "successes" INTEGER NOT NULL DEFAULT 0,
    "failures" INTEGER NOT NULL DEFAULT 0,
    "timeouts" INTEGER NOT NULL DEFAULT 0,
    "retries" INTEGER NOT NULL DEFAULT 0,
    "tokens_in" BIGINT NOT NULL DEFAULT 0,
    "tokens_out" BIGINT NOT NULL DEFAULT 0,
    "latency_sum_ms" BIGINT NOT NULL DEFAULT 0,
    "latency_max_ms" INTEGER NOT NULL DEFAULT 0,
    "ttft_sum_ms" BIGINT NOT NULL DEFAULT 0,
    "latency_histogram" JSONB NOT NULL DEFAULT '{}',
    "expires_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "request_rollups_pkey" PRIMARY KEY ("bucket_seconds","bucket_start","model","device_id")
);

-- CreateTable
CREATE TABLE "telemetry_rollups" (
    "device_id" TEXT NOT NULL,
    "bucket_start" TIMESTAMP(3) NOT NULL,
    "bucket_seconds" INTEGER NOT NULL,
    "samples" INTEGER NOT NULL DEFAULT 0,
    "cpu_avg" DOUBLE PRECISION NOT NULL DEFAULT 0,
    "cpu_max" DOUBLE PRECISION NOT NULL DEFAULT 0,
    "memory_avg_bytes" DOUBLE PRECISION NOT NULL DEFAULT 0,
    "memory_max_bytes" DOUBLE PRECISION NOT NULL DEFAULT 0,
    "vram_avg_bytes" DOUBLE PRECISION NOT NULL DEFAULT 0,
    "vram_max_bytes" DOUBLE PRECISION NOT NULL DEFAULT 0,
    "tokens_per_second_avg" DOUBLE PRECISION NOT NULL DEFAULT 0,
    "tokens_per_second_max" DOUBLE PRECISION NOT NULL DEFAULT 0,
    "queue_avg" DOUBLE PRECISION NOT NULL DEFAULT 0,
    "queue_max" INTEGER NOT NULL DEFAULT 0,
    "requests" INTEGER NOT NULL DEFAULT 0,
    "failures" INTEGER NOT NULL DEFAULT 0,
    "expires_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "telemetry_rollups_pkey" PRIMARY KEY ("device_id","bucket_seconds","bucket_start")
);

-- CreateTable
CREATE TABLE "alerts" (
    "id" TEXT NOT NULL,
    "rule" TEXT NOT NULL,
    "severity" "alert_severity" NOT NULL,
    "subject" TEXT NOT NULL,
    "state" "alert_state" NOT NULL DEFAULT 'open',
    "value" DOUBLE PRECISION,
    "threshold" DOUBLE PRECISION,
    "message" TEXT,
    "opened_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "resolved_at" TIMESTAMP(3),

    CONSTRAINT "alerts_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "users" (
    "id" TEXT NOT NULL,
    "email" TEXT NOT NULL,
    "password_hash" TEXT NOT NULL,
    "role" "user_role" NOT NULL DEFAULT 'viewer',
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,
    "last_login_at" TIMESTAMP(3),
    "disabled_at" TIMESTAMP(3),

    CONSTRAINT "users_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "sessions" (
    "id" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "token_hash" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expires_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "sessions_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "api_keys" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "prefix" TEXT NOT NULL,
    "key_hash" TEXT NOT NULL,
    "scope" "api_key_scope" NOT NULL,
    "role" "user_role",
    "model_allow_list" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "rate_limit_per_minute" INTEGER,
    "created_by_id" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expires_at" TIMESTAMP(3),
    "revoked_at" TIMESTAMP(3),
    "last_used_at" TIMESTAMP(3),

    CONSTRAINT "api_keys_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "audit_events" (
    "id" TEXT NOT NULL,
    "at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "actor" TEXT NOT NULL,
    "action" TEXT NOT NULL,
    "target" TEXT,
    "details" JSONB NOT NULL DEFAULT '{}',

    CONSTRAINT "audit_events_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "devices_status_idx" ON "devices"("status");

-- CreateIndex
CREATE INDEX "devices_name_idx" ON "devices"("name");

-- CreateIndex
CREATE UNIQUE INDEX "device_credentials_mqtt_username_key" ON "device_credentials"("mqtt_username");

-- CreateIndex
CREATE INDEX "device_credentials_device_id_idx" ON "device_credentials"("device_id");

-- CreateIndex
CREATE UNIQUE INDEX "enrollment_tokens_token_hash_key" ON "enrollment_tokens"("token_hash");

-- CreateIndex
CREATE INDEX "enrollment_tokens_expires_at_idx" ON "enrollment_tokens"("expires_at");

-- CreateIndex
CREATE UNIQUE INDEX "models_name_key" ON "models"("name");

-- CreateIndex
CREATE INDEX "models_tier_idx" ON "models"("tier");

-- CreateIndex
CREATE UNIQUE INDEX "deployments_name_key" ON "deployments"("name");

-- CreateIndex
CREATE INDEX "deployments_model_id_idx" ON "deployments"("model_id");

-- CreateIndex
CREATE INDEX "placements_model_id_idx" ON "placements"("model_id");

-- CreateIndex
CREATE INDEX "placements_deployment_id_idx" ON "placements"("deployment_id");

-- CreateIndex
CREATE UNIQUE INDEX "placements_device_id_model_id_key" ON "placements"("device_id", "model_id");

-- CreateIndex
CREATE INDEX "model_states_model_name_state_idx" ON "model_states"("model_name", "state");

-- CreateIndex
CREATE INDEX "inference_requests_created_at_idx" ON "inference_requests"("created_at");

-- CreateIndex
CREATE INDEX "inference_requests_model_created_at_idx" ON "inference_requests"("model", "created_at");

-- CreateIndex
CREATE INDEX "inference_requests_device_id_created_at_idx" ON "inference_requests"("device_id", "created_at");

-- CreateIndex
CREATE INDEX "inference_requests_api_key_id_created_at_idx" ON "inference_requests"("api_key_id", "created_at");

-- CreateIndex
CREATE INDEX "request_rollups_expires_at_idx" ON "request_rollups"("expires_at");

-- CreateIndex
CREATE INDEX "request_rollups_device_id_bucket_seconds_bucket_start_idx" ON "request_rollups"("device_id", "bucket_seconds", "bucket_start");

-- CreateIndex
CREATE INDEX "telemetry_rollups_expires_at_idx" ON "telemetry_rollups"("expires_at");

-- CreateIndex
CREATE INDEX "alerts_state_opened_at_idx" ON "alerts"("state", "opened_at");

-- CreateIndex
CREATE INDEX "alerts_rule_subject_state_idx" ON "alerts"("rule", "subject", "state");

-- CreateIndex
CREATE UNIQUE INDEX "users_email_key" ON "users"("email");

-- CreateIndex
CREATE UNIQUE INDEX "sessions_token_hash_key" ON "sessions"("token_hash");

-- CreateIndex
CREATE INDEX "sessions_user_id_idx" ON "sessions"("user_id");

-- CreateIndex
CREATE INDEX "sessions_expires_at_idx" ON "sessions"("expires_at");

-- CreateIndex
CREATE UNIQUE INDEX "api_keys_prefix_key" ON "api_keys"("prefix");

-- CreateIndex
CREATE INDEX "api_keys_created_by_id_idx" ON "api_keys"("created_by_id");

-- CreateIndex
CREATE INDEX "audit_events_at_idx" ON "audit_events"("at");

-- CreateIndex
CREATE INDEX "audit_events_actor_at_idx" ON "audit_events"("actor", "at");

-- CreateIndex
CREATE INDEX "audit_events_target_at_idx" ON "audit_events"("target", "at");

-- AddForeignKey
ALTER TABLE "device_credentials" ADD CONSTRAINT "device_credentials_device_id_fkey" FOREIGN KEY ("device_id") REFERENCES "devices"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "enrollment_tokens" ADD CONSTRAINT "enrollment_tokens_created_by_id_fkey" FOREIGN KEY ("created_by_id") REFERENCES "users"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "device_outbox_cursors" ADD CONSTRAINT "device_outbox_cursors_device_id_fkey" FOREIGN KEY ("device_id") REFERENCES "devices"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "deployments" ADD CONSTRAINT "deployments_model_id_fkey" FOREIGN KEY ("model_id") REFERENCES "models"("id") ON DELETE NO ACTION ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "placements" ADD CONSTRAINT "placements_device_id_fkey" FOREIGN KEY ("device_id") REFERENCES "devices"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "placements" ADD CONSTRAINT "placements_model_id_fkey" FOREIGN KEY ("model_id") REFERENCES "models"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "placements" ADD CONSTRAINT "placements_deployment_id_fkey" FOREIGN KEY ("deployment_id") REFERENCES "deployments"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "model_states" ADD CONSTRAINT "model_states_device_id_fkey" FOREIGN KEY ("device_id") REFERENCES "devices"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "telemetry_rollups" ADD CONSTRAINT "telemetry_rollups_device_id_fkey" FOREIGN KEY ("device_id") REFERENCES "devices"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "sessions" ADD CONSTRAINT "sessions_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_created_by_id_fkey" FOREIGN KEY ("created_by_id") REFERENCES "users"("id") ON DELETE SET NULL ON UPDATE CASCADE;
