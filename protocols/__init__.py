"""Sans-IO protocol codecs: bytes in, typed events out, and back. Nothing in this
package imports trio or touches a socket (a test enforces it)."""
