import { rmSync } from "node:fs";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export type LocalhostCert = { certPath: string; keyPath: string; cert: string; key: string };

// One cert per process: openssl takes ~50 ms and every suite can share the same throwaway pair.
let pending: Promise<LocalhostCert> | undefined;

/**
 * A self-signed certificate for `localhost` (CN and SAN, plus 127.0.0.1), generated at test time into a
 * temp dir so no private key is ever committed. The cert is its own CA: trust `cert` to trust the peer.
 */
export function makeLocalhostCert(): Promise<LocalhostCert> {
  pending ??= generate().catch((err) => {
    pending = undefined;
    throw err;
  });
  return pending;
}

async function generate(): Promise<LocalhostCert> {
  const dir = await mkdtemp(join(tmpdir(), "localhost-cert-"));
  const certPath = join(dir, "cert.pem");
  const keyPath = join(dir, "key.pem");
  const proc = Bun.spawn(
    [
      "openssl",
      "req",
      "-x509",
      "-nodes",
      "-days",
      "2",
      // EC keys generate in milliseconds; RSA 2048 can take a noticeable fraction of a second.
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-keyout",
      keyPath,
      "-out",
      certPath,
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
    ],
    { stdout: "ignore", stderr: "pipe" },
  );
  const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
  if (code !== 0) throw new Error(`openssl failed (${code}): ${stderr.trim()}`);
  const [cert, key] = await Promise.all([readFile(certPath, "utf8"), readFile(keyPath, "utf8")]);
  // Paths stay valid for the whole process (callers may hand them to other tools); only "exit" may delete them,
  // and exit handlers must be synchronous.
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  return { certPath, keyPath, cert, key };
}
