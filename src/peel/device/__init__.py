"""The on-device runtime: numpy + stdlib only (no torch, no pickle).

Open a bundle up to a memory budget, rank items for one user with Eq. 10, and shrink or grow the
budget at once::

    from peel.device import Bundle
    bundle = Bundle.open("export/group_0.peelb", budget="5MB")
    rec = bundle.for_user(user_vector, history=seen_item_ids)
    item_ids, scores = rec.recommend(k=50)
    rec.shrink("3MB")

The file format is docs/bundle-format.md; :mod:`peel.device.writer` writes it.
"""

from peel.device.bundle import Bundle
from peel.device.directory import ExportIndex, recommend_for_user
from peel.device.format import FORMAT, MAX_HEADER_BYTES, VERSION
from peel.device.recommender import Recommender
from peel.device.users import UserRecord, Users
from peel.device.writer import write_items_bundle, write_users_file
from peel.errors import BudgetError, BundleError

__all__ = ["Bundle", "Recommender", "Users", "UserRecord", "ExportIndex", "recommend_for_user",
           "write_items_bundle", "write_users_file", "BundleError", "BudgetError", "FORMAT", "VERSION",
           "MAX_HEADER_BYTES"]
