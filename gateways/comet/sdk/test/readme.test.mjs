// The ten-line chat of README.md runs and chats.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync, rmSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { env, token, until, unique } from "./env.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

test("the README's ten-line chat sends and receives", async () => {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const code = readme.match(/## A ten-line chat[\s\S]*?```js\n([\s\S]*?)```/)[1];
  assert.ok(code.trim().split("\n").length <= 10, "the chat is longer than ten lines");
  assert.ok(code.includes("ws://127.0.0.1:8080/ws"));
  // Inside the package, so that "@laneim/client" resolves to it.
  const file = join(root, `.readme-chat-${process.pid}.mjs`);
  writeFileSync(file, code.replace("ws://127.0.0.1:8080/ws", env.wsOther));
  const flags = Number(process.versions.node.split(".")[0]) < 22 ? ["--experimental-websocket"] : [];
  const child = spawn(process.execPath, [...flags, file], { env: { ...process.env, TOKEN: await token("carol") } });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  try {
    await until(() => out.includes("(open)"), "the chat to connect: " + out);
    // Typed before the chat reads stdin, the line waits in the pipe.
    const line = unique("typed in the readme chat");
    child.stdin.write(line + "\n");
    await until(() => out.includes(`carol: ${line}`), "the typed line to come back: " + out);
    assert.match(out, /\[room:lobby #\d+\] carol: /);
  } finally {
    child.kill();
    rmSync(file, { force: true });
  }
});
