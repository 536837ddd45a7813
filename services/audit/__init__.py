"""audit: replay the FED stream and re-check it (`stekker audit verify`), pure logic."""
