"""Thin Gadgetron gadgets around perfmoco (external-language Python interface).

``gadgets.perfmoco_gadget.perfmoco`` is the chain target; see
``config/perfmoco-chain-execute.xml`` and ``config/perfmoco-chain-connect.xml``.
"""
