// Drives a Decision Gate server with the official MCP TypeScript SDK.
//
// Reads one JSON job from stdin (the same shape as ../python/driver.py):
//   {"server": {"url": "..."} | {"command": "...", "args": [...]},
//    "calls": [{"tool": "...", "arguments": {...}}, ...]}
// and prints one JSON document: the negotiated protocol version, the server name, the listed
// tool names and, per call, the result as it arrived or the JSON-RPC error. The assertions live
// in the Rust system tests; this script only speaks the protocol.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

async function main() {
  const job = await readStdin();
  const transport = job.server.url
    ? new StreamableHTTPClientTransport(new URL(job.server.url))
    : new StdioClientTransport({ command: job.server.command, args: job.server.args ?? [] });
  const client = new Client({ name: "decision-gate-system-tests", version: "1.0.0" });
  await client.connect(transport);
  const out = { results: [] };
  out.protocol_version = transport.protocolVersion ?? null;
  out.server_name = client.getServerVersion()?.name ?? null;
  const listed = await client.listTools();
  out.tools = listed.tools.map((tool) => tool.name);
  for (const call of job.calls) {
    try {
      out.results.push(await client.callTool({ name: call.tool, arguments: call.arguments ?? {} }));
    } catch (error) {
      if (error instanceof McpError) {
        out.results.push({ rpc_error: { code: error.code, message: error.message } });
      } else {
        throw error;
      }
    }
  }
  await client.close();
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((error) => {
  process.stderr.write(`driver failed: ${error?.stack ?? error}\n`);
  process.exit(1);
});
