"""
netsuite's parallel downloader: the engine, its command line
(C{netsuite-get}) and the download service.
"""
