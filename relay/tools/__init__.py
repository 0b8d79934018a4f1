"""Server tools: function tools the relay offers in every session and runs itself, from MCP servers.

`settings` reads which servers and who may use what; `hub` connects to the servers and calls their tools;
`calls` decides, per session and free of I/O, what a tool call means for the conversation; `runner` runs a
session's calls off the forwarding path; `output` turns a tool's result into what the model reads.
"""
