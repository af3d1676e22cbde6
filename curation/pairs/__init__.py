"""Stage 4 (MAGREF Appendix B.4): variants I', backgrounds I^Bg, cross-clip pairs, the samples of Eq. 19.

* ``requests``: which references of a clip get a variant, plus its background request;
* ``variants``: the prompt bank and the editor operator (FLUX Kontext by default);
* ``backgrounds``: keyframe, subject mask union, inpainting (SDXL or OpenCV), augmentation;
* ``cross_clip``: the same identity in another clip, found with a nearest-neighbour index;
* ``assemble``: the training record of one clip (Eq. 19);
* ``generators`` / ``tiny``: loading and calling the diffusers pipelines, and their tiny builds.
"""
