"""Drives a Decision Gate server with the official MCP Python SDK.

Reads one JSON job from stdin:
  {"server": {"url": "http://127.0.0.1:PORT/mcp"} | {"command": "...", "args": [...]},
   "mode": "auto" | "legacy",
   "calls": [{"tool": "...", "arguments": {...}}, ...]}
and prints one JSON document: the negotiated protocol version, the server name, the listed
tool names and, per call, the result as it arrived on the wire or the JSON-RPC error. The
assertions live in the Rust system tests; this script only speaks the protocol.
"""

import asyncio
import json
import sys

from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError


async def run(job):
    server = job["server"]
    if "url" in server:
        target = server["url"]
    else:
        target = StdioServerParameters(command=server["command"], args=server.get("args", []))
    out = {"results": []}
    async with Client(target, mode=job.get("mode", "auto")) as client:
        out["protocol_version"] = client.protocol_version
        info = client.server_info
        out["server_name"] = info.name if info else None
        listed = await client.list_tools()
        out["tools"] = [tool.name for tool in listed.tools]
        for call in job["calls"]:
            try:
                result = await client.call_tool(call["tool"], call.get("arguments"))
                out["results"].append(result.model_dump(by_alias=True, mode="json", exclude_none=True))
            except MCPError as error:
                out["results"].append({"rpc_error": {"code": error.code, "message": error.message}})
    return out


def main():
    job = json.load(sys.stdin)
    print(json.dumps(asyncio.run(run(job))))


if __name__ == "__main__":
    main()
