"""Generated protobuf code for ``protos/caffe.proto`` (``caffe_pb2``)."""

from . import caffe_pb2

__all__ = ["caffe_pb2"]
