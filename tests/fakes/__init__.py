"""Provider fakes: real HTTP servers on loopback (STYLE habit 11)."""
