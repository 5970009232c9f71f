// The examples: the contest worker of the cross-language test, and the
// process-directory pipeline, against the live ledgerd.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { promisify } from "node:util";

import { FencedSink, processDirectory, StaleTokenError, transform } from "../examples/process-directory.js";
import { addr, distPath, newClient, T, TIMEOUT_MS, uniqueKey, uniqueNamespace } from "./helpers.js";

const run = promisify(execFile);
const scratch = mkdtempSync(join(tmpdir(), "ledgerd-ts-examples-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

describe("contest-worker", () => {
  test("of three racing workers, one does the work and all report its value", T, async () => {
    const namespace = uniqueNamespace();
    const key = uniqueKey();
    const workLog = join(scratch, `${key}.log`);
    const owners = ["ts-a", "ts-b", "ts-c"];
    const outputs = await Promise.all(
      owners.map((owner) =>
        run(
          process.execPath,
          [
            distPath("../examples/contest-worker.js"),
            "--addr", addr, "--namespace", namespace, "--key", key, "--owner", owner,
            // A lease no load can make run out while the work runs: the work
            // is done once, and the others replay it.
            "--work-log", workLog, "--work-ms", "300", "--lease-ttl-ms", "300000",
          ],
          { timeout: TIMEOUT_MS },
        ),
      ),
    );
    const lines = readFileSync(workLog, "utf8").split("\n").filter(Boolean);
    assert.equal(lines.length, 1, `the work ran ${lines.length} times: ${lines.join(", ")}`);
    const winner = lines[0]!;
    assert.ok(owners.includes(winner));

    const reports = outputs.map(({ stdout }) => {
      const printed = stdout.split("\n").filter(Boolean);
      assert.equal(printed.length, 1, `expected one line, got: ${stdout}`);
      return JSON.parse(printed[0]!) as { owner: string; value: string; replayed: boolean; fencing_token: number };
    });
    assert.deepEqual(reports.map((r) => r.owner).sort(), owners);
    for (const report of reports) {
      assert.equal(report.value, `done by ${winner}`);
      assert.equal(report.fencing_token, 1);
      assert.equal(report.replayed, report.owner !== winner);
      assert.deepEqual(Object.keys(report), ["owner", "value", "replayed", "fencing_token"]);
    }
  });

  test("exits 1 with the error on stderr", T, async () => {
    await assert.rejects(
      run(process.execPath, [
        distPath("../examples/contest-worker.js"),
        "--addr", addr, "--namespace", uniqueNamespace(), "--key", "", "--owner", "o",
        "--work-log", join(scratch, "unused.log"), "--work-ms", "0",
      ], { timeout: TIMEOUT_MS }),
      (err: { code?: number; stdout?: string; stderr?: string }) => {
        assert.equal(err.code, 1);
        assert.equal(err.stdout, "");
        assert.match(err.stderr ?? "", /InvalidArgumentError/);
        return true;
      },
    );
  });
});

describe("process-directory", () => {
  test("the fenced sink refuses writes older than the newest token", () => {
    const sink = new FencedSink(join(scratch, "sink"));
    sink.write("r", "from token 2", 2n);
    sink.write("r", "again from token 2", 2n);
    sink.write("r", "from token 3", 3n);
    assert.throws(() => sink.write("r", "zombie", 2n), StaleTokenError);
    assert.equal(readFileSync(join(scratch, "sink", "r"), "utf8"), "from token 3");
    assert.equal(sink.token("r"), 3n);
  });

  test("transform normalizes each non-empty record, as the Python example does", () => {
    assert.deepEqual(transform(Buffer.from(" one \r\n\ntwo\n")), ["ONE\nTWO\n", 2]);
    assert.deepEqual(transform(Buffer.from("\n \n")), ["", 0]);
  });

  test("processes every file once, keyed by its relative path; a second run replays; a changed file is refused", T, async () => {
    const input = join(scratch, "records");
    const output = join(scratch, "processed");
    rmSync(input, { recursive: true, force: true });
    const client = newClient();
    try {
      mkdirSync(join(input, "sub"), { recursive: true });
      writeFileSync(join(input, "a.txt"), "one\ntwo\n");
      writeFileSync(join(input, "sub", "b.txt"), "three\n");
      const namespace = uniqueNamespace();
      const quiet = () => undefined;

      const first = await processDirectory(client, namespace, input, output, {}, quiet, quiet);
      assert.deepEqual(first, { processed: 2, replayed: 0, failed: 0 });
      assert.equal(readFileSync(join(output, "a.txt.out"), "utf8"), "ONE\nTWO\n");
      assert.equal(readFileSync(join(output, "sub", "b.txt.out.token"), "utf8"), "1\n");
      const { entry } = await client.lookup({ namespace, key: "sub/b.txt" });
      assert.match(new TextDecoder().decode(entry!.result), /^\{"output": ".*sub\/b\.txt\.out", "records": 1, "sha256": "[0-9a-f]{64}", "token": 1\}$/);

      const second = await processDirectory(client, namespace, input, output, {}, quiet, quiet);
      assert.deepEqual(second, { processed: 0, replayed: 2, failed: 0 });

      const errors: string[] = [];
      writeFileSync(join(input, "sub", "b.txt"), "changed\n");
      const third = await processDirectory(client, namespace, input, output, {}, quiet, (line) => errors.push(line));
      assert.deepEqual(third, { processed: 0, replayed: 1, failed: 1 });
      assert.deepEqual(errors, ["sub/b.txt: changed since it was processed (fingerprint mismatch); use a new key"]);
    } finally {
      client.close();
    }
  });

  test("runs as a command with the Python example's flags", T, async () => {
    const input = join(scratch, "cli-records");
    mkdirSync(input, { recursive: true });
    writeFileSync(join(input, "r1"), "hello\n");
    const args = [
      distPath("../examples/process-directory.js"),
      "--addr", addr, "--input", input, "--output", join(scratch, "cli-out"), "--namespace", uniqueNamespace(),
    ];
    const { stdout } = await run(process.execPath, args, { timeout: TIMEOUT_MS });
    assert.match(stdout, /^r1: processed \(token 1, attempt 1\), 1 records -> .*cli-out\/r1\.out$/m);
    assert.match(stdout, /^1 processed, 0 already done, 0 failed$/m);
  });
});
