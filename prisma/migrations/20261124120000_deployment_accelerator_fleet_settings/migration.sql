-- Scheduler and fleet file: a deployment's accelerator need, and fleet-wide settings (the routing block).

-- CreateEnum
CREATE TYPE "deployment_accelerator" AS ENUM ('any', 'preferred', 'required');

-- AlterTable
ALTER TABLE "deployments" ADD COLUMN "accelerator" "deployment_accelerator" NOT NULL DEFAULT 'any';

-- CreateTable
CREATE TABLE "fleet_settings" (
    "key" TEXT NOT NULL,
    "value" JSONB NOT NULL,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "fleet_settings_pkey" PRIMARY KEY ("key")
);
