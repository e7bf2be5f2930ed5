"""The silo's datasets: registration (with de-identification and minimisation), the
registry in the silo database, and the training views plans are allowed to see."""
