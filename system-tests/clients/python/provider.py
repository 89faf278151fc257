"""An external evidence provider built with the official MCP Python SDK, for the system tests.

It offers the `evidence_query` tool Decision Gate calls with {query, context}:
  - check `ready` answers whether params.environment is "staging";
  - check `slow` never answers in time;
  - check `huge` answers a 2 MiB string (under the transport's default cap, far over a configured one).
Run over stdio by the server under test, or with `--http PORT` as a Streamable HTTP server on
127.0.0.1.
"""

import sys
import time
from typing import Any

from mcp.server.mcpserver import MCPServer

server = MCPServer("deploys")


@server.tool(name="evidence_query", structured_output=True)
def evidence_query(query: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    check = query["check_id"]
    if check == "ready":
        environment = (query.get("params") or {}).get("environment")
        return {
            "value": {"kind": "json", "value": environment == "staging"},
            "content_type": "application/json",
        }
    if check == "slow":
        time.sleep(30)
        return {"value": {"kind": "json", "value": True}}
    if check == "huge":
        return {"value": {"kind": "json", "value": "x" * (2 * 1024 * 1024)}}
    raise ValueError(f"unknown check {check}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
