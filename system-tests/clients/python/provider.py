"""An external evidence provider built with the official MCP Python SDK, for the system tests.

It offers the `evidence_query` tool Decision Gate calls with {query, context}:
  - check `ready` answers whether params.environment is "staging";
  - check `slow` never answers in time.
Run over stdio by the server under test.
"""

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
    raise ValueError(f"unknown check {check}")


if __name__ == "__main__":
    server.run("stdio")
