from proxy.provider.inprocess import FlagedgeProvider

__all__ = ["FlagedgeProvider"]
