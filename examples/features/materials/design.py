"""Mass from materials and densities.

A part's mass and inertia come from its exact CAD solid and its density (kg/m³):
  1. PARTS[label]["density"], when given (it overrides the material);
  2. else the density of its build123d `material` (build123d 0.13 checks the name against
     bd_materials: "aluminum", "mild_steel", "brass", "pine", "oak", "pla", "abs", ...);
  3. else 1000 kg/m³.
Setting `material` also sets the part's colour; set `color` afterwards to override it.

Four 50 mm cubes (125 000 mm³ each) resting on the floor.
"""

from build123d import Box, Pos

PARTS = {
    # Pine is 500 kg/m³; this block is declared as wet pine at 900 kg/m³: 0.1125 kg.
    "wet_pine": {"density": 900},
}


def build():
    alu = Pos(-150, 0, 25) * Box(50, 50, 50)
    alu.label = "aluminum"
    alu.material = "aluminum"  # 2700 kg/m³ → 0.3375 kg
    steel = Pos(-50, 0, 25) * Box(50, 50, 50)
    steel.label = "steel"
    steel.material = "mild_steel"  # 7800 kg/m³ → 0.975 kg
    steel.color = (0.35, 0.35, 0.4)  # after `material`, or the material's colour wins
    pine = Pos(50, 0, 25) * Box(50, 50, 50)
    pine.label = "wet_pine"
    pine.material = "pine"  # 500 kg/m³, overridden by PARTS: 900 kg/m³ → 0.1125 kg
    plain = Pos(150, 0, 25) * Box(50, 50, 50)
    plain.label = "plain"  # no material, no density: 1000 kg/m³ → 0.125 kg
    return [alu, steel, pine, plain]
