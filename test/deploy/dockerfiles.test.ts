// deploy/Dockerfile.cpu, Dockerfile.gpu and Dockerfile.webgpu, read as Docker reads them: every
// path they copy exists and is let into the build context, the build compiles every folder the
// CLI imports, the image runs as a non-root user through the batchlab entrypoint, the GPU image
// is the CUDA 11.2 / cuDNN 8 one whose native TensorFlow module must be fetched for the build to
// pass, and the WebGPU image has no CUDA, the Vulkan loader, Dawn, and asks for the graphics capability.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEPLOY, ROOT, walk } from './support.js';

interface Instruction {
  op: string;
  args: string;
  line: number;
}

/** Instructions of a Dockerfile: comments dropped, continuation lines joined. */
function instructions(path: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = '';
  let start = 0;
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((raw, i) => {
      const line = raw.trim();
      if (pending === '' && (line === '' || line.startsWith('#'))) return;
      if (pending !== '' && line.startsWith('#')) return;
      if (pending === '') start = i + 1;
      pending += `${line.replace(/\\$/, '')} `;
      if (!line.endsWith('\\')) {
        const [op, ...rest] = pending.trim().split(/\s+/);
        out.push({ op: op!.toUpperCase(), args: rest.join(' '), line: start });
        pending = '';
      }
    });
  return out;
}

/** Instructions of the final stage (after the last FROM). */
function finalStage(all: Instruction[]): Instruction[] {
  const last = all.map((i) => i.op).lastIndexOf('FROM');
  return all.slice(last);
}

/** Sources of COPY instructions that read the build context (not --from another stage). */
function contextSources(all: Instruction[]): string[] {
  return all
    .filter((i) => (i.op === 'COPY' || i.op === 'ADD') && !/--from=/.test(i.args))
    .flatMap((i) => {
      const words = i.args.split(/\s+/).filter((w) => !w.startsWith('--'));
      return words.slice(0, -1);
    });
}

/** The allowlist of a Dockerfile-specific .dockerignore: "*" then "!name" lines. */
function allowlist(dockerignore: string): { allowed: string[]; denied: string[] } {
  const lines = readFileSync(dockerignore, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  expect(lines[0], `${dockerignore} starts by ignoring everything`).toBe('*');
  return {
    allowed: lines.filter((l) => l.startsWith('!')).map((l) => l.slice(1)),
    denied: lines.slice(1).filter((l) => !l.startsWith('!')),
  };
}

const DOCKERFILES = ['Dockerfile.cpu', 'Dockerfile.gpu', 'Dockerfile.webgpu'] as const;
const stageDefaults = (all: Instruction[]): Record<string, string> =>
  Object.fromEntries(
    all.filter((i) => i.op === 'ARG' && i.args.includes('=')).map((i) => i.args.split('=', 2) as [string, string]),
  );

describe.each(DOCKERFILES)('deploy/%s', (name) => {
  const path = join(DEPLOY, name);
  const all = instructions(path);

  it('copies only paths that exist, each let into the context by its .dockerignore allowlist', () => {
    const { allowed } = allowlist(join(DEPLOY, `${name}.dockerignore`));
    const sources = contextSources(all);
    expect(sources.length).toBeGreaterThan(0);
    for (const source of sources) {
      expect(existsSync(join(ROOT, source)), `${name}: COPY ${source}`).toBe(true);
      expect(allowed, `${name}: ${source} is excluded from the build context`).toContain(source.split('/')[0]);
    }
    // And the allowlist lets in nothing the image does not copy.
    for (const entry of allowed)
      expect(
        sources.map((s) => s.split('/')[0]),
        `${name}.dockerignore lets in ${entry}`,
      ).toContain(entry);
  });

  it('compiles every source folder the CLI imports (a folder left out would break the image build)', () => {
    const copied = new Set(contextSources(all).filter((s) => existsSync(join(ROOT, s)) && !s.includes('.')));
    expect([...copied]).toEqual(expect.arrayContaining(['cli', 'coordinator', 'worker', 'shared']));
    for (const dir of copied) {
      for (const file of walk(join(ROOT, dir)).filter((f) => f.endsWith('.ts'))) {
        for (const m of readFileSync(file, 'utf8').matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
          const target = relative(ROOT, resolve(dirname(file), m[1]!));
          expect(
            copied.has(target.split(sep)[0]!),
            `${relative(ROOT, file)} imports ${m[1]}, outside the folders the image copies`,
          ).toBe(true);
        }
      }
    }
    expect(
      all.some((i) => i.op === 'RUN' && /npm ci\b/.test(i.args)),
      'npm ci from the lockfile',
    ).toBe(true);
    expect(all.some((i) => i.op === 'RUN' && /tsc -p tsconfig\.json/.test(i.args))).toBe(true);
  });

  it('ships the package root the code looks for (package.json) and the embedded dataset (assets/)', () => {
    const final = finalStage(all);
    expect(final.some((i) => i.op === 'COPY' && /package\.json/.test(i.args))).toBe(true);
    expect(final.some((i) => i.op === 'COPY' && /^assets\b/.test(i.args))).toBe(true);
    expect(existsSync(join(ROOT, 'assets/fashion-mnist-subset'))).toBe(true);
  });

  it('runs as a non-root numeric USER (so Kubernetes runAsNonRoot can verify it) through the batchlab entrypoint', () => {
    const final = finalStage(all);
    const users = final.filter((i) => i.op === 'USER');
    expect(users.length).toBeGreaterThan(0);
    const user = users.at(-1)!.args;
    expect(user).toMatch(/^\d+(:\d+)?$/);
    expect(Number(user.split(':')[0])).toBeGreaterThan(0);
    const entrypoint = JSON.parse(final.filter((i) => i.op === 'ENTRYPOINT').at(-1)!.args) as string[];
    expect(entrypoint.at(-1)).toBe('batchlab');
    expect(entrypoint[0]).toBe('/usr/bin/tini');
    expect(
      final.some(
        (i) =>
          i.op === 'RUN' && /ln -s \/opt\/batchlab\/dist\/cli\/batchlab\.js \/usr\/local\/bin\/batchlab/.test(i.args),
      ),
    ).toBe(true);
    // The user is created, with the home the image works in.
    expect(
      final.some((i) => i.op === 'RUN' && new RegExp(`useradd .*--uid ${user.split(':')[0]}\\b`).test(i.args)),
    ).toBe(true);
  });

  it('sets no BATCHLAB_* variable in the image (the CLI would read it as an option of every command)', () => {
    expect(all.filter((i) => i.op === 'ENV' && /\bBATCHLAB/.test(i.args))).toEqual([]);
  });
});

/**
 * The Node major the images run: an LTS line still maintained, and below 23, which removed
 * util.isNullOrUndefined that @tensorflow/tfjs-node(-gpu) 4.22 calls (tensorflow/tfjs#8609).
 */
const IMAGE_NODE_MAJOR = 22;
/** The node:<major>-<debian>-slim tag's Node major. */
function nodeMajor(image: string | undefined): number {
  const m = /^node:(\d+)-bookworm-slim$/.exec(image ?? '');
  if (!m) throw new Error(`not a node:<major>-bookworm-slim image: ${image}`);
  return Number(m[1]);
}

describe('the CPU, GPU and WebGPU images', () => {
  it(`every image runs Node ${IMAGE_NODE_MAJOR} LTS, which package.json's engines accept (as do older Node 20.19+ hosts)`, () => {
    for (const f of ['Dockerfile.cpu', 'Dockerfile.gpu', 'Dockerfile.webgpu'])
      expect(nodeMajor(stageDefaults(instructions(join(DEPLOY, f))).NODE_IMAGE), f).toBe(IMAGE_NODE_MAJOR);
    const engines = JSON.parse(readFileSync(join(DEPLOY, '../package.json'), 'utf8')).engines.node;
    expect(engines).toBe('>=20.19');
    expect(() => nodeMajor('node:20-bullseye')).toThrow();
  });

  it('the CPU image builds on the Node image', () => {
    const all = instructions(join(DEPLOY, 'Dockerfile.cpu'));
    expect(stageDefaults(all).NODE_IMAGE).toBe(`node:${IMAGE_NODE_MAJOR}-bookworm-slim`);
    expect(finalStage(all)[0]!.args).toBe('${NODE_IMAGE}');
  });

  it("the GPU image runs on a CUDA 11.x + cuDNN 8 runtime on Ubuntu 22.04 or later, and fails to build without tfjs-node-gpu's native module", () => {
    const all = instructions(join(DEPLOY, 'Dockerfile.gpu'));
    const defaults = stageDefaults(all);
    // libtensorflow 2.9.1 is built on CUDA 11.2: any 11.x runtime (minor version compatibility),
    // never 12; cuDNN 8; no Ubuntu 20.04 (end of standard support).
    const cuda = /^nvidia\/cuda:11\.(\d+)\.\d+-cudnn8-runtime-ubuntu(\d+)\.04$/.exec(defaults.CUDA_IMAGE ?? '');
    expect(cuda, defaults.CUDA_IMAGE).not.toBeNull();
    expect(Number(cuda![1])).toBeGreaterThanOrEqual(2);
    expect(Number(cuda![2])).toBeGreaterThanOrEqual(22);
    expect(defaults.NODE_IMAGE).toBe(`node:${IMAGE_NODE_MAJOR}-bookworm-slim`);
    expect(finalStage(all)[0]!.args).toBe('${CUDA_IMAGE}');
    const rebuild = all.find((i) => i.op === 'RUN' && /npm rebuild @tensorflow\/tfjs-node-gpu/.test(i.args));
    expect(rebuild, 'the install script of tfjs-node-gpu runs at build time').toBeDefined();
    expect(rebuild!.args).not.toMatch(/\|\|/);
    expect(rebuild!.args).toMatch(/tfjs_binding\.node/);
    // It runs on the CUDA base (same OS as the runtime), not in the Debian build stage.
    const stageOf = (i: Instruction): string =>
      all
        .slice(0, all.indexOf(i))
        .filter((x) => x.op === 'FROM')
        .at(-1)!.args;
    expect(stageOf(rebuild!)).toBe('${CUDA_IMAGE} AS native');
    expect(finalStage(all).some((i) => i.op === 'ENV' && /TF_FORCE_GPU_ALLOW_GROWTH=true/.test(i.args))).toBe(true);
  });

  it('documents the TensorFlow 2.9 / sm_90 risk and the one-step smoke run in the GPU Dockerfile', () => {
    const text = readFileSync(join(DEPLOY, 'Dockerfile.gpu'), 'utf8');
    expect(text).toMatch(/sm_90/);
    expect(text).toContain('local --workers 1 --steps 1 --backend tensorflow-gpu');
  });

  describe('the WebGPU image', () => {
    const all = instructions(join(DEPLOY, 'Dockerfile.webgpu'));
    const final = finalStage(all);
    const stageOf = (i: Instruction): string =>
      all
        .slice(0, all.indexOf(i))
        .filter((x) => x.op === 'FROM')
        .at(-1)!.args;
    /** NAME=value pairs of the ENV instructions of the final stage. */
    const env = (): Record<string, string> =>
      Object.fromEntries(
        final
          .filter((i) => i.op === 'ENV')
          .flatMap((i) => i.args.split(/\s+/))
          .map((w) => w.split('=', 2) as [string, string]),
      );

    it('builds on the Node image with no CUDA anywhere (the GPU is reached through Vulkan)', () => {
      expect(stageDefaults(all).NODE_IMAGE).toBe(`node:${IMAGE_NODE_MAJOR}-bookworm-slim`);
      expect(final[0]!.args).toBe('${NODE_IMAGE}');
      for (const i of all.filter((x) => x.op !== 'LABEL')) expect(i.args, `line ${i.line}`).not.toMatch(/cuda|cudnn/i);
      expect(
        all.some(
          (i) => /tfjs-node-gpu/.test(i.args) && !/rm -rf node_modules\/@tensorflow\/tfjs-node-gpu/.test(i.args),
        ),
      ).toBe(false);
    });

    it("installs the Vulkan loader and the libraries NVIDIA's Vulkan driver loads, and no Mesa (no silent software adapter)", () => {
      const installs = final.filter((i) => i.op === 'RUN' && /apt-get install/.test(i.args)).map((i) => i.args);
      expect(installs.join(' ')).toMatch(/\blibvulkan1\b/);
      expect(installs.join(' ')).toMatch(/\blibxext6\b/);
      expect(installs.join(' ')).toMatch(/\blibegl1\b/);
      for (const i of all) expect(i.args, `line ${i.line}`).not.toMatch(/mesa/i);
    });

    it('asks the NVIDIA Container Toolkit for the graphics capability (the Vulkan ICD) and has a writable XDG_RUNTIME_DIR', () => {
      const vars = env();
      expect(vars.NVIDIA_DRIVER_CAPABILITIES!.split(',').sort()).toEqual(['compute', 'graphics', 'utility']);
      expect(vars.NVIDIA_VISIBLE_DEVICES).toBe('all');
      expect(vars.XDG_RUNTIME_DIR).toBe('/tmp/xdg');
      const uid = final
        .filter((i) => i.op === 'USER')
        .at(-1)!
        .args.split(':')[0];
      expect(
        final.some(
          (i) =>
            i.op === 'RUN' &&
            new RegExp(`install -d -m 0700 -o ${uid} -g \\d+ ${vars.XDG_RUNTIME_DIR}\\b`).test(i.args),
        ),
        'XDG_RUNTIME_DIR created, owned by the image user',
      ).toBe(true);
    });

    it('fails to build without the WebGPU backend and a dawn.node for the build platform', () => {
      const check = all.find((i) => i.op === 'RUN' && /dawn\.node/.test(i.args));
      expect(check, 'a RUN that tests for dawn.node').toBeDefined();
      expect(check!.args).not.toMatch(/\|\|/);
      expect(check!.args).toMatch(/test -f "node_modules\/webgpu\/dist\/\$arch\/dawn\.node"/);
      expect(check!.args).toMatch(/test -d node_modules\/@tensorflow\/tfjs-backend-webgpu/);
      expect(stageOf(check!)).toBe('${NODE_IMAGE} AS build');
      // It runs after the production dependencies are settled (npm prune would not drop them, but
      // a check before the prune would prove nothing about what the image ships).
      const prune = all.find((i) => i.op === 'RUN' && /npm prune/.test(i.args))!;
      expect(all.indexOf(check!)).toBeGreaterThan(all.indexOf(prune));
    });

    it('ships scripts/gpu-check.sh as gpu-check and documents the one-step smoke run', () => {
      expect(
        final.some((i) => i.op === 'COPY' && /scripts\/gpu-check\.sh \/usr\/local\/bin\/gpu-check$/.test(i.args)),
      ).toBe(true);
      const text = readFileSync(join(DEPLOY, 'Dockerfile.webgpu'), 'utf8');
      expect(text).toContain('local --workers 1 --steps 1 --backend webgpu');
      expect(text).toContain('software fallback');
    });
  });
});
