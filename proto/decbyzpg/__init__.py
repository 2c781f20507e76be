"""Generated protobuf/gRPC modules of the DecByzPG wire protocol (see peer.proto)."""
