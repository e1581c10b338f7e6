import { statfs } from 'node:fs/promises';
import { arch, cpus, freemem, hostname, platform, release, totalmem } from 'node:os';
import type { GpuInfo, Hardware } from '@flotilla/protocol';
import si from 'systeminformation';

/** Hardware inventory for hello and enrollment: CPU and RAM (systeminformation), disk of the model directory, GPUs (engine). */
export async function detectHardware(modelsDir: string, gpus: () => Promise<GpuInfo[]>): Promise<Hardware> {
  const [cpu, memory, disk, gpuList] = await Promise.all([
    si.cpu().catch(() => undefined),
    si.mem().catch(() => undefined),
    diskOf(modelsDir),
    gpus().catch(() => []),
  ]);
  const model = cpu ? `${cpu.manufacturer} ${cpu.brand}`.trim() : (cpus()[0]?.model ?? 'unknown');
  return {
    cpu: { model: model.slice(0, 256), cores: Math.max(1, cpu?.cores ?? cpus().length) },
    memory: { totalBytes: memory?.total ?? totalmem(), freeBytes: memory?.available ?? freemem() },
    disk,
    gpus: gpuList.slice(0, 16),
    os: { platform: platform(), release: release().slice(0, 256), arch: arch(), hostname: hostname().slice(0, 256) },
  };
}

export async function diskOf(path: string): Promise<{ freeBytes: number; totalBytes: number }> {
  try {
    const stats = await statfs(path);
    return { freeBytes: stats.bavail * stats.bsize, totalBytes: stats.blocks * stats.bsize };
  } catch {
    return { freeBytes: 0, totalBytes: 0 };
  }
}

/** CPU busy percent since the previous call (all cores). */
export class CpuMeter {
  private last = snapshot();

  percent(): number {
    const now = snapshot();
    const busy = now.busy - this.last.busy;
    const total = now.total - this.last.total;
    this.last = now;
    return total > 0 ? Math.min(100, Math.max(0, (busy / total) * 100)) : 0;
  }
}

function snapshot(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const cpu of cpus()) {
    const { user, nice, sys, irq, idle } = cpu.times;
    busy += user + nice + sys + irq;
    total += user + nice + sys + irq + idle;
  }
  return { busy, total };
}
